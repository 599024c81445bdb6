package agent

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/prober/spool"
	"github.com/cutoffnet/cutoff/store"
)

// maxHeld bounds the results held in memory while the spool is full: past
// it, batches are dropped, loudly (counted and logged), rather than the
// agent running out of memory.
const maxHeld = 2_000_000

// collector is the scheduler's sink: it turns results and verdicts into
// store rows, and appends them to the spool in batches.
type collector struct {
	vantage string
	sp      *spool.Spool
	m       *metrics
	log     *slog.Logger
	count   *atomic.Int64

	mu   sync.Mutex
	cur  store.Batch
	held [][]byte // encoded batches the spool refused (full), oldest first

	flushMu sync.Mutex // one flush at a time, in order
}

func newCollector(vantage string, sp *spool.Spool, m *metrics, log *slog.Logger, count *atomic.Int64) *collector {
	return &collector{vantage: vantage, sp: sp, m: m, log: log, count: count}
}

var stateNames = map[sched.State]string{
	sched.Up: "up", sched.Down: "down", sched.Uncertain: "uncertain", sched.Unmeasurable: "unmeasurable",
}

// Result implements sched.Sink. It must not block: it appends to memory.
func (c *collector) Result(r sched.Result) {
	kind := r.Target.Kind.String()
	outcome := r.Outcome.String()
	c.m.probes.WithLabelValues(kind, outcome).Inc()
	if r.Outcome == prober.Reply || r.Outcome == prober.Refused || r.Outcome == prober.Unreachable {
		c.m.rtt.WithLabelValues(kind).Observe(r.RTT.Seconds())
	}
	row := store.Result{Vantage: c.vantage, Kind: kind, Addr: r.Target.Addr, Port: r.Target.Port, SentAt: r.Sent,
		RTT: r.RTT, Outcome: outcome, Responder: r.Responder, Rcode: r.Rcode, Round: r.Round}
	c.mu.Lock()
	c.cur.Results = append(c.cur.Results, row)
	c.mu.Unlock()
	c.count.Add(1)
}

// Verdict implements sched.Sink: one observation per block of the unit.
func (c *collector) Verdict(v sched.Verdict) {
	state, ok := stateNames[v.State]
	if !ok {
		return // no judgement yet
	}
	c.m.verdicts.WithLabelValues(state).Inc()
	c.mu.Lock()
	for _, b := range v.Blocks {
		c.cur.Observations = append(c.cur.Observations, store.Observation{Vantage: c.vantage, Block: b, Unit: v.Unit,
			At: v.Time, SentAt: v.Start, Round: v.Round, State: state, Belief: v.Belief, Probes: v.Probes, Replies: v.Replies})
	}
	c.mu.Unlock()
}

// run flushes every interval until ctx ends.
func (c *collector) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.flush()
			return
		case <-t.C:
			c.flush()
		}
	}
}

// flush appends what was collected to the spool, durably.
func (c *collector) flush() {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	c.mu.Lock()
	b := c.cur
	c.cur = store.Batch{}
	c.mu.Unlock()
	if b.Len() > 0 {
		data, err := encodeBatch(&b)
		if err != nil {
			// Rows the codec cannot represent are a bug, not data loss to
			// hide: say so loudly.
			c.log.Error("cannot encode a batch; dropped", "rows", b.Len(), "err", err)
			return
		}
		c.held = append(c.held, data)
	}
	if len(c.held) == 0 {
		return
	}
	if _, err := c.sp.AppendBatch(c.held); err != nil {
		if errors.Is(err, spool.ErrFull) {
			c.m.spoolFull.Inc()
			n := 0
			for _, h := range c.held {
				n += len(h)
			}
			c.log.Warn("spool full: holding batches in memory", "batches", len(c.held), "bytes", n, "err", err)
			for n > maxHeld*40 && len(c.held) > 1 {
				c.log.Error("memory bound reached with the spool full: dropping the oldest held batch", "bytes", len(c.held[0]))
				c.m.batchesLost.Inc()
				n -= len(c.held[0])
				c.held = c.held[1:]
			}
			return
		}
		c.log.Error("spool append failed; holding batches in memory", "err", err)
		return
	}
	c.held = nil
}
