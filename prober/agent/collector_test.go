package agent

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/prober/spool"
)

// newTestCollector is a collector over a fresh spool (opt) with its own
// metrics, logging to log.
func newTestCollector(t *testing.T, opt spool.Options, log io.Writer) *collector {
	t.Helper()
	sp, err := spool.Open(t.TempDir(), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	if log == nil {
		log = io.Discard
	}
	return newCollector("vp1", sp, newMetrics(prometheus.NewRegistry(), sp, nil), slog.New(slog.NewTextHandler(log, nil)), new(atomic.Int64))
}

func result(i int, at time.Time) sched.Result {
	return sched.Result{Result: prober.Result{
		Target:  prober.Target{Kind: prober.KindICMP, Addr: netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})},
		Sent:    at.Add(time.Duration(i) * time.Millisecond),
		Outcome: prober.Timeout,
	}, Round: 1}
}

// TestCollectorWritesAtOnce: a result handed over is written into the
// spool (where a SIGKILL cannot take it) at once, not at the next flush
// timer, which here never fires.
func TestCollectorWritesAtOnce(t *testing.T) {
	c := newTestCollector(t, spool.Options{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.run(ctx, time.Hour); close(done) }()
	defer func() { cancel(); <-done }()
	base := time.Now()
	for i := range 3 {
		start := time.Now()
		c.Result(result(i, base))
		for c.written.Load() < int64(i+1) {
			if time.Since(start) > 2*time.Second {
				t.Fatalf("result %d not in the spool 2 s after it was handed over", i)
			}
			time.Sleep(100 * time.Microsecond)
		}
		t.Logf("result %d in the spool after %v", i, time.Since(start))
	}
	if c.sp.Pending() == 0 {
		t.Fatal("the spool holds nothing")
	}
}

// TestCollectorMemoryBound: with the spool full, batches wait in memory;
// past the memory bound the oldest are dropped, counted by
// cutoff_batches_dropped_total, and the collector reports the loss.
func TestCollectorMemoryBound(t *testing.T) {
	var log syncBuffer
	c := newTestCollector(t, spool.Options{MaxBytes: 2 << 10, SegmentBytes: 1 << 10}, &log)
	c.maxBytes = 4 << 10
	base := time.Now()
	for i := range 40 {
		for j := range 20 {
			c.Result(result(i*20+j, base))
		}
		c.write(true)
	}
	if err := c.flush(); err == nil {
		t.Fatal("flush: no error with results dropped and held")
	} else if !strings.Contains(err.Error(), "dropped") || !strings.Contains(err.Error(), "only in memory") {
		t.Fatalf("flush: %v, want the dropped and the held results named", err)
	}
	dropped := value(t, c.m.batchesDropped)
	if dropped == 0 || value(t, c.m.spoolFull) == 0 {
		t.Fatalf("dropped %v, spool full %v: want both counted", dropped, value(t, c.m.spoolFull))
	}
	held := 0
	for _, h := range c.held {
		held += h.results
	}
	if got := c.written.Load() + c.lost.Load() + int64(held); got != 800 {
		t.Fatalf("written %d + lost %d + held %d = %d, want the 800 handed over", c.written.Load(), c.lost.Load(), held, got)
	}
	if c.lost.Load() != int64(dropped)*20 {
		t.Fatalf("%d results lost in %v dropped batches of 20", c.lost.Load(), dropped)
	}
	if !strings.Contains(log.String(), "memory bound reached") {
		t.Fatalf("no drop logged:\n%s", log.String())
	}
}

// TestRoundDuration: cutoff_round_duration_seconds measures each round,
// from the first probe of its first visit to its last verdict, not the
// configured round.
func TestRoundDuration(t *testing.T) {
	c := newTestCollector(t, spool.Options{}, nil)
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	blk := netip.MustParsePrefix("198.19.0.0/24")
	verdict := func(round int64, start, end time.Duration) {
		c.Verdict(sched.Verdict{Unit: blk, Blocks: []netip.Prefix{blk}, Round: round, State: sched.Up, Belief: 0.9,
			Start: base.Add(start), Time: base.Add(end)})
	}
	round := func() float64 { return value(t, c.m.round) }
	tests := []struct {
		name       string
		round      int64
		start, end time.Duration
		want       float64 // the gauge after the verdict
	}{
		{"first verdict of round 1: nothing complete yet", 1, 2 * time.Second, 3 * time.Second, 0},
		{"round 1 goes on", 1, 0, time.Second, 0},
		{"its last verdict", 1, 9 * time.Second, 12 * time.Second, 0},
		{"round 2 starts: round 1 took 12 s", 2, 11 * time.Second, 13 * time.Second, 12},
		{"a late verdict of round 1", 1, 10 * time.Second, 14 * time.Second, 14},
		{"a very late one of round 0 changes nothing", 0, 0, 20 * time.Second, 14},
		{"round 3 starts: round 2 took 2 s", 3, 30 * time.Second, 31 * time.Second, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verdict(tt.round, tt.start, tt.end)
			if got := round(); got != tt.want {
				t.Fatalf("cutoff_round_duration_seconds %v, want %v", got, tt.want)
			}
		})
	}
	c.finishRound()
	if got := round(); got != 1 {
		t.Fatalf("after finishRound: %v, want round 3's 1 s", got)
	}
}
