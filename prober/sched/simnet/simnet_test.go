package simnet

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober"
)

var start = time.Date(2014, 12, 22, 16, 0, 0, 0, time.UTC)

func TestClockRunsCallbacksInOrder(t *testing.T) {
	c := NewClock(start)
	var got []int
	var at []time.Duration
	for _, d := range []int{3, 1, 2, 1} {
		c.AfterFunc(time.Duration(d)*time.Second, func() {
			got = append(got, d)
			at = append(at, c.Now().Sub(start))
			if d == 2 {
				// A callback may schedule more; due ones run in the same advance.
				c.AfterFunc(500*time.Millisecond, func() { got = append(got, 25) })
			}
		})
	}
	c.Advance(10 * time.Second)
	want := []int{1, 1, 2, 25, 3}
	if len(got) != len(want) {
		t.Fatalf("ran %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ran %v, want %v", got, want)
		}
	}
	if at[0] != time.Second || at[2] != 2*time.Second {
		t.Fatalf("callbacks saw times %v", at)
	}
	if c.Now().Sub(start) != 10*time.Second || c.Pending() != 0 {
		t.Fatalf("clock at %v with %d pending", c.Now().Sub(start), c.Pending())
	}
}

func TestProbeOutcomes(t *testing.T) {
	c := NewClock(start)
	n := New(Options{Clock: c, Timeout: 2 * time.Second, Seed: 1})
	n.Add(netip.MustParsePrefix("198.19.0.0/24"), Block{
		Hosts: []uint8{1, 2}, TCP: map[uint8][]uint16{2: {80}}, DNS: []uint8{2}, Latency: 30 * time.Millisecond,
	})
	n.Add(netip.MustParsePrefix("198.19.1.0/24"), Block{Hosts: []uint8{1}, FilterICMP: true, TCP: map[uint8][]uint16{1: {443}}})
	n.Add(netip.MustParsePrefix("198.19.2.0/24"), Block{Hosts: []uint8{1}, Down: true, Unreachable: true})
	n.Add(netip.MustParsePrefix("198.19.3.0/24"), Block{Hosts: []uint8{1}, Down: true})
	a := netip.MustParseAddr
	tests := []struct {
		name    string
		give    prober.Target
		want    prober.Outcome
		wantRTT time.Duration
	}{
		{"echo from a responsive host", prober.Target{Kind: prober.KindICMP, Addr: a("198.19.0.1")}, prober.Reply, 30 * time.Millisecond},
		{"echo to a silent address", prober.Target{Kind: prober.KindICMP, Addr: a("198.19.0.9")}, prober.Timeout, 0},
		{"open port", prober.Target{Kind: prober.KindTCP, Addr: a("198.19.0.2"), Port: 80}, prober.Reply, 30 * time.Millisecond},
		{"closed port of a live host", prober.Target{Kind: prober.KindTCP, Addr: a("198.19.0.2"), Port: 22}, prober.Refused, 30 * time.Millisecond},
		{"DNS server", prober.Target{Kind: prober.KindDNS, Addr: a("198.19.0.2"), Port: 53, Qname: "kp."}, prober.Reply, 30 * time.Millisecond},
		{"echo into a filtering network", prober.Target{Kind: prober.KindICMP, Addr: a("198.19.1.1")}, prober.Timeout, 0},
		{"TCP into a filtering network", prober.Target{Kind: prober.KindTCP, Addr: a("198.19.1.1"), Port: 443}, prober.Reply, 20 * time.Millisecond},
		{"cut block with a router that says so", prober.Target{Kind: prober.KindICMP, Addr: a("198.19.2.1")}, prober.Unreachable, 10 * time.Millisecond},
		{"cut block, silent", prober.Target{Kind: prober.KindICMP, Addr: a("198.19.3.1")}, prober.Timeout, 0},
		{"outside the world", prober.Target{Kind: prober.KindICMP, Addr: a("198.18.9.9")}, prober.Timeout, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *prober.Result
			if err := n.Probe(context.Background(), tt.give, func(r prober.Result) { got = &r }); err != nil {
				t.Fatal(err)
			}
			if got != nil {
				t.Fatal("result delivered before its time")
			}
			c.Advance(3 * time.Second)
			if got == nil || got.Outcome != tt.want || got.RTT != tt.wantRTT {
				t.Fatalf("result %+v, want %v after %v", got, tt.want, tt.wantRTT)
			}
		})
	}
	if n.Sent(0) != int64(len(tests)) || n.Sent(prober.KindTCP) != 3 || n.SentTo(netip.MustParsePrefix("198.19.0.0/24")) != 5 {
		t.Fatalf("counted %d sent, %d TCP, %d to 198.19.0.0/24", n.Sent(0), n.Sent(prober.KindTCP), n.SentTo(netip.MustParsePrefix("198.19.0.0/24")))
	}
}

func TestSetDownAndAvailability(t *testing.T) {
	c := NewClock(start)
	n := New(Options{Clock: c, Seed: 2})
	b := netip.MustParsePrefix("198.19.0.0/24")
	n.Add(b, Block{Hosts: []uint8{1, 2, 3, 4}, Avail: 0.5, Churn: time.Hour})
	answered := func() int {
		k := 0
		for h := 1; h <= 4; h++ {
			n.Probe(context.Background(), prober.Target{Kind: prober.KindICMP, Addr: netip.AddrFrom4([4]byte{198, 19, 0, byte(h)})},
				func(r prober.Result) {
					if r.Outcome == prober.Reply {
						k++
					}
				})
		}
		c.Advance(10 * time.Second)
		return k
	}
	// With churn, a host's state holds for the period: the same hosts
	// answer twice in a row.
	first, second := answered(), answered()
	if first != second {
		t.Fatalf("%d then %d hosts answered within one churn period", first, second)
	}
	n.SetDown(netip.MustParsePrefix("198.19.0.0/16"), true)
	if k := answered(); k != 0 {
		t.Fatalf("%d hosts answered while down", k)
	}
	n.SetDown(b, false)
	if k := answered(); k != first {
		t.Fatalf("%d hosts answered after the restore, want %d", k, first)
	}
	// Over many periods, about half answer.
	total := 0
	for range 200 {
		c.Advance(time.Hour)
		total += answered()
	}
	if total < 300 || total > 500 {
		t.Fatalf("%d of 800 probes answered at availability 0.5", total)
	}
}

func TestRefuseAndClose(t *testing.T) {
	errNo := errors.New("no")
	n := New(Options{Clock: NewClock(start), Refuse: func(t prober.Target) error {
		if t.Port == 22 {
			return errNo
		}
		return nil
	}})
	called := false
	if err := n.Probe(context.Background(), prober.Target{Kind: prober.KindTCP, Port: 22}, func(prober.Result) { called = true }); !errors.Is(err, errNo) {
		t.Fatalf("refused probe: %v", err)
	}
	n.Close()
	if err := n.Probe(context.Background(), prober.Target{Kind: prober.KindICMP}, func(prober.Result) { called = true }); !errors.Is(err, ErrClosed) {
		t.Fatalf("probe after close: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := New(Options{}).Probe(ctx, prober.Target{Kind: prober.KindICMP}, func(prober.Result) { called = true }); err == nil {
		t.Fatal("probe with a cancelled context was sent")
	}
	if called || n.Sent(0) != 0 {
		t.Fatal("a probe that was not sent got a result or was counted")
	}
}
