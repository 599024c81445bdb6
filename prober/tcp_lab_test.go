package prober

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// listenIn opens a TCP listener inside namespace ns that accepts and
// closes connections until the test ends.
func listenIn(t *testing.T, n *testNet, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := n.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

func TestTCPOutcomesLab(t *testing.T) {
	n := newTestNet(t)
	listenIn(t, n, n.Country, "198.19.128.10:80")
	var e *TCP
	if err := n.Do(n.Vantage, func() error {
		var err error
		e, err = NewTCP(TCPConfig{Config: Config{Policy: labOnly, Limiter: NewLimiter(1000), Timeout: 300 * time.Millisecond}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	open := netip.MustParseAddr("198.19.128.10")
	tests := []struct {
		name string
		give netip.AddrPort
		want Outcome
		from netip.Addr
	}{
		{"listener", netip.AddrPortFrom(open, 80), Reply, open},
		{"no listener: reset", netip.AddrPortFrom(open, 81), Refused, open},
		{"silent", netip.AddrPortFrom(netSilent, 80), Timeout, netip.Addr{}},
		{"host unreachable from the router", netip.AddrPortFrom(netUnreach, 80), Unreachable, netRouter},
		{"prohibited by the router", netip.AddrPortFrom(netProhibit, 443), Unreachable, netRouter},
		{"local route unreachable", netip.AddrPortFrom(netLocalFail, 80), Error, netip.Addr{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := Target{Kind: KindTCP, Addr: tt.give.Addr(), Port: tt.give.Port()}
			r := probeWait(t, e, tg)
			if r.Outcome != tt.want || r.Responder != tt.from {
				t.Fatalf("%s from %s (%s), want %s from %s", r.Outcome, r.Responder, r.Err, tt.want, tt.from)
			}
			if r.Target != tg {
				t.Errorf("target %s, want %s", r.Target, tg)
			}
			if (tt.want == Reply || tt.want == Refused || tt.want == Unreachable) && (r.RTT <= 0 || r.RTT > time.Second) {
				t.Errorf("rtt %v", r.RTT)
			}
			if tt.want == Error && r.Err == "" {
				t.Errorf("error outcome without Err")
			}
		})
	}
	st := e.Stats()
	if st != (TCPStats{Sent: 6, Replies: 1, Refused: 1, Timeouts: 1, Unreachable: 2, Errors: 1}) {
		t.Errorf("stats %+v", st)
	}
	for _, a := range []string{"10.0.0.1", "8.8.8.8"} {
		err := e.Probe(context.Background(), Target{Kind: KindTCP, Addr: netip.MustParseAddr(a), Port: 80}, func(Result) { t.Errorf("done called for refused %s", a) })
		if !errors.Is(err, ErrRefused) {
			t.Errorf("Probe(%s) = %v, want ErrRefused", a, err)
		}
	}
	if st := e.Stats(); st.Sent != 6 {
		t.Errorf("refused targets counted as sent: %+v", st)
	}
}

func TestTCPCloseCompletesInFlight(t *testing.T) {
	n := newTestNet(t)
	var e *TCP
	if err := n.Do(n.Vantage, func() error {
		var err error
		e, err = NewTCP(TCPConfig{Config: Config{Policy: labOnly, Timeout: time.Hour}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ch := make(chan Result, 1)
	if err := e.Probe(context.Background(), Target{Kind: KindTCP, Addr: netSilent, Port: 80}, func(r Result) { ch <- r }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	e.Close()
	select {
	case r := <-ch:
		if r.Outcome != Error {
			t.Errorf("closed probe: %s, want error", r.Outcome)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close left a probe hanging")
	}
}
