//go:build linux

package prober_test

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
)

// BenchmarkICMPSweep sweeps the lab country's AnyIP range
// (198.19.128.0/17, every address answers) from vantage vp1 as fast as
// the engine goes, b.N probes in all, and reports the send rate, the
// share of probes matched, and the share of the echo replies the country
// sent (its /proc/net/snmp OutEchoReps) that were matched. Needs root:
//
//	go test ./prober -run '^$' -bench ICMPSweep -benchtime 500000x -count 5
func BenchmarkICMPSweep(b *testing.B) {
	l := upLab(b, true)
	tests := []struct {
		name string
		mode prober.ICMPMode
		rate int // the limiter's cap
	}{
		// As fast as the engine goes: the cap is far above it.
		{"raw", prober.ICMPRaw, 10_000_000},
		{"ping", prober.ICMPPing, 10_000_000},
		// Paced by a 100k/s limiter, as a deployment would be.
		{"raw-100k", prober.ICMPRaw, 100_000},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			e := in(b, l, "vp1", func() (*prober.ICMP, error) {
				return prober.NewICMP(prober.ICMPConfig{
					Config: prober.Config{Policy: labOnly, Limiter: prober.NewLimiter(tt.rate), Timeout: 2 * time.Second},
					Mode:   tt.mode,
				})
			})
			sweep(b, l, e)
		})
	}
}

func sweep(b *testing.B, l *lab.Lab, e *prober.ICMP) {
	var replies, completed atomic.Int64
	all := make(chan struct{})
	total := int64(b.N)
	done := func(r prober.Result) {
		if r.Outcome == prober.Reply {
			replies.Add(1)
		}
		if completed.Add(1) == total {
			close(all)
		}
	}
	base := benchAnyIP.Addr().As4()
	size := 1 << (32 - benchAnyIP.Bits())
	echoes := readSNMP(b, l, "country", "Icmp", "OutEchoReps")
	before := e.Stats()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		j := i % size
		a := base
		a[2] += byte(j >> 8)
		a[3] += byte(j)
		if err := e.Probe(ctx, prober.Target{Kind: prober.KindICMP, Addr: netip.AddrFrom4(a)}, done); err != nil {
			b.Fatal(err)
		}
	}
	sendTime := time.Since(start)
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		b.Fatalf("%d of %d probes completed", completed.Load(), total)
	}
	b.StopTimer()
	answered := readSNMP(b, l, "country", "Icmp", "OutEchoReps") - echoes
	b.ReportMetric(float64(b.N)/sendTime.Seconds(), "probes/s")
	b.ReportMetric(100*float64(replies.Load())/float64(b.N), "matched%")
	if answered > 0 {
		b.ReportMetric(100*float64(replies.Load())/float64(answered), "matched%answered")
	}
	st := e.Stats()
	b.Logf("N=%d country answered %d, engine: sent %d, replies %d, timeouts %d, rejected %d",
		b.N, answered, st.Sent-before.Sent, st.Replies-before.Replies, st.Timeouts-before.Timeouts, st.Rejected()-before.Rejected())
}
