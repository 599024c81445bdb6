//go:build linux

package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutoffnet/cutoff/prober"
)

// Sweep is cutoff's side of the ICMP comparison: one echo request to
// every address of a range through the ICMP engine, at a fixed rate or as
// fast as it goes. It runs in a process of its own (the benchmark starts
// it inside the vantage's namespace, like zmap and fping), so that its CPU
// time is measured the same way as theirs: the child's rusage.
type Sweep struct {
	// Range is swept once, without its first and last address (as fping
	// -g does), in address order.
	Range netip.Prefix
	// Rate caps probes per second; 0 means as fast as the engine goes.
	Rate int
	// Timeout is how long each probe waits for its reply.
	Timeout time.Duration
	// Limit bounds the whole sweep.
	Limit time.Duration
	// Mode is the ICMP socket: raw (the default) or ping.
	Mode string
}

// SweepResult is what the engine counted.
type SweepResult struct {
	Probes   int64 `json:"probes"`   // Probe calls accepted
	Sent     int64 `json:"sent"`     // written to the socket
	Replies  int64 `json:"replies"`  // matched echo replies
	Timeouts int64 `json:"timeouts"` // no answer in time
	Other    int64 `json:"other"`    // unreachable or error
	// SendSeconds is the time from the first Probe call to the last.
	SendSeconds float64 `json:"send_seconds"`
}

// maxRate stands for "as fast as it goes": far above what one vantage
// reaches, so the limiter never waits.
const maxRate = 100_000_000

// SweepFlags registers s's fields as flags on fs; Args renders s as the
// same flags, so the benchmark and the worker it starts agree.
func SweepFlags(fs *flag.FlagSet, s *Sweep) {
	fs.Func("range", "`PREFIX` to sweep (inside the lab's 198.18.0.0/15)", func(v string) error {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return err
		}
		s.Range = p
		return nil
	})
	fs.IntVar(&s.Rate, "rate", s.Rate, "probes per second (0: as fast as the engine goes)")
	fs.DurationVar(&s.Timeout, "timeout", time.Second, "per-probe timeout")
	fs.DurationVar(&s.Limit, "limit", time.Minute, "bound on the whole sweep")
	fs.StringVar(&s.Mode, "mode", "raw", "ICMP socket: raw or ping")
}

// Args renders s as the flags SweepFlags reads.
func (s Sweep) Args() []string {
	return []string{"--range", s.Range.String(), "--rate", strconv.Itoa(s.Rate),
		"--timeout", s.Timeout.String(), "--limit", s.Limit.String(), "--mode", s.Mode}
}

// Run sweeps the range from the calling process's network namespace.
// Only the range may be probed: every other address is opted out.
func (s Sweep) Run(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	if !s.Range.IsValid() || !prober.Lab.Contains(s.Range.Addr()) || s.Range.Bits() < prober.Lab.Bits() {
		return res, fmt.Errorf("sweep: range %s is not inside the lab's %s", s.Range, prober.Lab)
	}
	if s.Timeout <= 0 || s.Limit <= 0 || s.Rate < 0 {
		return res, errors.New("sweep: timeout and limit must be positive, rate not negative")
	}
	mode := map[string]prober.ICMPMode{"raw": prober.ICMPRaw, "ping": prober.ICMPPing}
	m, ok := mode[s.Mode]
	if !ok {
		return res, fmt.Errorf("sweep: mode %q: want raw or ping", s.Mode)
	}
	rate := s.Rate
	if rate == 0 {
		rate = maxRate
	}
	ctx, cancel := context.WithTimeout(ctx, s.Limit)
	defer cancel()
	e, err := prober.NewICMP(prober.ICMPConfig{
		Config: prober.Config{
			Policy:  prober.Policy{Allow: []netip.Prefix{s.Range}, OptOut: complement(s.Range)},
			Limiter: prober.NewLimiter(rate),
			Timeout: s.Timeout,
		},
		Mode: m,
	})
	if err != nil {
		return res, err
	}
	defer e.Close()
	var replies, timeouts, other, completed atomic.Int64
	all := make(chan struct{})
	var allOnce sync.Once
	var total atomic.Int64
	total.Store(-1) // unknown until every probe is queued
	done := func(r prober.Result) {
		switch r.Outcome {
		case prober.Reply:
			replies.Add(1)
		case prober.Timeout:
			timeouts.Add(1)
		default:
			other.Add(1)
		}
		if completed.Add(1) == total.Load() {
			allOnce.Do(func() { close(all) })
		}
	}
	start := time.Now()
	addrs(s.Range, true, func(a netip.Addr) bool {
		err = e.Probe(ctx, prober.Target{Kind: prober.KindICMP, Addr: a}, done)
		if err != nil {
			return false
		}
		res.Probes++
		return true
	})
	res.SendSeconds = time.Since(start).Seconds()
	if err != nil {
		return res, fmt.Errorf("sweep: %w", err)
	}
	total.Store(res.Probes)
	if completed.Load() == res.Probes {
		allOnce.Do(func() { close(all) })
	}
	select {
	case <-all:
	case <-ctx.Done():
		return res, fmt.Errorf("sweep: %d of %d probes completed: %w", completed.Load(), res.Probes, ctx.Err())
	}
	st := e.Stats()
	res.Sent = int64(st.Sent)
	res.Replies, res.Timeouts, res.Other = replies.Load(), timeouts.Load(), other.Load()
	return res, nil
}
