package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/prober/spool"
	"github.com/cutoffnet/cutoff/store"
)

// maxHeldBytes bounds the encoded batches held in memory while the spool
// is full (about 2 million results): past it, the oldest are dropped,
// loudly (counted, logged, and Run fails), rather than the agent running
// out of memory.
const maxHeldBytes = 80 << 20

// collector is the scheduler's sink: it turns results and verdicts into
// store rows and writes them into the spool as soon as it has them.
//
// Its goroutine (run) wakes on every hand-over and Writes what has come
// in since its last write into the spool: from then on the rows survive
// the agent being killed. While it writes, further rows gather, so the
// faster they come the larger the batches. It syncs the spool every
// flush interval: a power cut loses at most that much.
type collector struct {
	vantage  string
	sp       *spool.Spool
	m        *metrics
	log      *slog.Logger
	count    *atomic.Int64 // results handed over
	maxBytes int           // bound on held bytes (maxHeldBytes)

	mu     sync.Mutex
	cur    store.Batch
	rounds roundSpans
	wake   chan struct{} // a token when cur has rows

	writeMu sync.Mutex  // one write at a time, in order
	held    []heldBatch // encoded batches the spool refused (full), oldest first
	full    bool        // the last write found the spool full
	syncErr error       // the spool failed to sync: written rows may be lost

	written atomic.Int64 // results written into the spool
	lost    atomic.Int64 // results dropped: never in the spool
}

type heldBatch struct {
	data    []byte
	results int
}

func newCollector(vantage string, sp *spool.Spool, m *metrics, log *slog.Logger, count *atomic.Int64) *collector {
	return &collector{vantage: vantage, sp: sp, m: m, log: log, count: count, maxBytes: maxHeldBytes, wake: make(chan struct{}, 1)}
}

var stateNames = map[sched.State]string{
	sched.Up: "up", sched.Down: "down", sched.Uncertain: "uncertain", sched.Unmeasurable: "unmeasurable",
}

// Result implements sched.Sink. It must not block: it appends to memory
// and wakes the collector's goroutine.
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
	c.nudge()
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
	if d, ok := c.rounds.add(v); ok {
		c.m.round.Set(d.Seconds())
	}
	c.mu.Unlock()
	c.nudge()
}

func (c *collector) nudge() {
	select {
	case c.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// finishRound reports the round in progress as complete: for --once and
// --sweep, whose single round ends with the run.
func (c *collector) finishRound() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d, ok := c.rounds.finish(); ok {
		c.m.round.Set(d.Seconds())
	}
}

// run writes what is handed over into the spool as it comes, and syncs
// the spool every interval, until ctx ends.
func (c *collector) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.flush()
			return
		case <-c.wake:
			c.write(false)
		case <-t.C:
			// Held batches are retried on the timer only: a full spool
			// frees space as fast as the database takes batches, no
			// faster.
			c.write(true)
			c.sync()
		}
	}
}

// flush writes everything collected into the spool and syncs it. It
// returns an error when some result is not durably in the spool: held in
// memory (the spool full or failing), dropped, or the sync failed.
func (c *collector) flush() error {
	c.write(true)
	c.sync()
	return c.err()
}

// holding says whether batches wait in memory for room in the spool.
func (c *collector) holding() bool {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return len(c.held) > 0
}

// err says whether every result handed over so far is in the spool and
// synced.
func (c *collector) err() error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	var errs []error
	if n := c.lost.Load(); n > 0 {
		errs = append(errs, fmt.Errorf("%d results were dropped, never spooled (see the log)", n))
	}
	if len(c.held) > 0 {
		n := 0
		for _, h := range c.held {
			n += h.results
		}
		errs = append(errs, fmt.Errorf("%d results in %d batches are only in memory: the spool would not take them (full or failing; see the log)", n, len(c.held)))
	}
	if c.syncErr != nil {
		errs = append(errs, fmt.Errorf("results written to the spool may not be on disk: %w", c.syncErr))
	}
	return errors.Join(errs...)
}

// write encodes what was collected and writes it, with any held
// batches, into the spool. When the spool was full last time it only
// adds to the held batches, unless retry is set.
func (c *collector) write(retry bool) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	b := c.cur
	c.cur = store.Batch{}
	c.mu.Unlock()
	if b.Len() > 0 {
		data, err := encodeBatch(&b)
		if err != nil {
			// Rows the codec cannot represent are a bug, not data loss to
			// hide: say so loudly.
			c.lost.Add(int64(len(b.Results)))
			c.log.Error("cannot encode a batch; dropped", "rows", b.Len(), "err", err)
		} else {
			c.held = append(c.held, heldBatch{data: data, results: len(b.Results)})
		}
	}
	if len(c.held) == 0 || (c.full && !retry) {
		c.bound()
		return
	}
	batch := make([][]byte, len(c.held))
	results := 0
	for i, h := range c.held {
		batch[i] = h.data
		results += h.results
	}
	_, err := c.sp.Write(batch)
	if err == nil {
		c.written.Add(int64(results))
		c.m.spooled.Add(float64(results))
		clear(c.held)
		c.held = c.held[:0]
		if c.full {
			c.log.Info("the spool takes batches again")
		}
		c.full = false
		return
	}
	if errors.Is(err, spool.ErrFull) {
		c.m.spoolFull.Inc()
		if !c.full {
			c.log.Warn("spool full: holding batches in memory until the database takes some", "batches", len(c.held), "err", err)
		}
	} else {
		c.log.Error("spool write failed; holding batches in memory", "err", err)
	}
	c.full = true
	c.bound()
}

// bound drops the oldest held batches past the memory bound. Called with
// writeMu held.
func (c *collector) bound() {
	n := 0
	for _, h := range c.held {
		n += len(h.data)
	}
	for n > c.maxBytes && len(c.held) > 1 {
		h := c.held[0]
		c.log.Error("memory bound reached with the spool full: dropping the oldest held batch; its results are lost",
			"results", h.results, "bytes", len(h.data))
		c.m.batchesDropped.Inc()
		c.lost.Add(int64(h.results))
		n -= len(h.data)
		c.held = c.held[1:]
	}
}

// sync makes what was written durable.
func (c *collector) sync() {
	err := c.sp.Sync()
	if err == nil || errors.Is(err, spool.ErrClosed) {
		return
	}
	c.writeMu.Lock()
	first := c.syncErr == nil
	c.syncErr = err
	c.writeMu.Unlock()
	if first {
		c.log.Error("spool sync failed: results written since the last sync may be lost to a power cut", "err", err)
	}
}

// roundSpans measures how long rounds really take: from the first probe
// of a round's first visit to its last verdict. A round is reported once
// a verdict of a later round arrives, and again if one of its own comes
// late.
type roundSpans struct {
	cur, prev roundSpan
	started   bool
}

type roundSpan struct {
	round       int64
	first, last time.Time
}

func (s *roundSpan) extend(from, to time.Time) {
	if from.Before(s.first) {
		s.first = from
	}
	if to.After(s.last) {
		s.last = to
	}
}

// add takes a verdict; it returns a completed round's duration when one
// is (re)measured.
func (r *roundSpans) add(v sched.Verdict) (time.Duration, bool) {
	from := v.Start
	if from.IsZero() || from.After(v.Time) {
		from = v.Time
	}
	switch {
	case !r.started || v.Round > r.cur.round:
		done := r.started
		r.prev, r.cur, r.started = r.cur, roundSpan{round: v.Round, first: from, last: v.Time}, true
		return r.prev.last.Sub(r.prev.first), done
	case v.Round == r.cur.round:
		r.cur.extend(from, v.Time)
	case v.Round == r.prev.round:
		r.prev.extend(from, v.Time)
		return r.prev.last.Sub(r.prev.first), true
	}
	return 0, false
}

// finish reports the round in progress as complete.
func (r *roundSpans) finish() (time.Duration, bool) {
	return r.cur.last.Sub(r.cur.first), r.started
}
