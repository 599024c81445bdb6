package prober

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkICMPSweep sweeps the country's AnyIP range (198.19.128.0/17,
// every address answers) from the vantage as fast as the engine goes, b.N
// probes in all, and reports the send rate, the share of probes matched,
// and the share of the country's echo replies (its /proc/net/snmp
// OutEchoReps) that were matched. Run it as root, e.g.
//
//	go test ./prober -run '^$' -bench ICMPSweep -benchtime 300000x -count 5
func BenchmarkICMPSweep(b *testing.B) {
	n := newTestNet(b)
	for _, mode := range []ICMPMode{ICMPRaw, ICMPPing} {
		b.Run(mode.String(), func(b *testing.B) {
			cfg := labICMPConfig(mode, 2*time.Second)
			cfg.Limiter = NewLimiter(10_000_000) // the engine is the bottleneck, not the cap
			e := newICMPIn(b, n, n.Vantage, cfg)
			sweep(b, n, e)
		})
	}
}

func sweep(b *testing.B, n *testNet, e *ICMP) {
	var replies, others, completed atomic.Int64
	all := make(chan struct{})
	total := int64(b.N)
	done := func(r Result) {
		if r.Outcome == Reply {
			replies.Add(1)
		} else {
			others.Add(1)
		}
		if completed.Add(1) == total {
			close(all)
		}
	}
	base := netResponsive.Addr().As4()
	size := 1 << (32 - netResponsive.Bits())
	echoes := n.readSNMP(b, n.Country, "Icmp", "OutEchoReps")
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		j := i % size
		a := base
		a[2] += byte(j >> 8)
		a[3] += byte(j)
		if err := e.Probe(ctx, Target{Kind: KindICMP, Addr: netip.AddrFrom4(a)}, done); err != nil {
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
	answered := n.readSNMP(b, n.Country, "Icmp", "OutEchoReps") - echoes
	b.ReportMetric(float64(b.N)/sendTime.Seconds(), "probes/s")
	b.ReportMetric(100*float64(replies.Load())/float64(b.N), "matched%")
	if answered > 0 {
		b.ReportMetric(100*float64(replies.Load())/float64(answered), "matched%answered")
	}
	st := e.Stats()
	if st.SendErrors > 0 {
		b.Logf("send errors: %d", st.SendErrors)
	}
	b.Logf("N=%d sent=%d replies=%d other=%d country answered=%d stats=%+v", b.N, st.Sent, replies.Load(), others.Load(), answered, st)
}
