//go:build linux

package prober_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
)

func labTCP(t testing.TB, l *lab.Lab, timeout time.Duration) *prober.TCP {
	t.Helper()
	return in(t, l, "vp1", func() (*prober.TCP, error) {
		return prober.NewTCP(prober.TCPConfig{Config: prober.Config{Policy: labOnly, Timeout: timeout}})
	})
}

func TestTCPOutcomesLab(t *testing.T) {
	l := upLab(t, false)
	listener := hostWhere(t, l, "net0", func(h lab.Host) bool { return slices.Contains(h.TCPPorts, 80) })
	closed := hostWhere(t, l, "net0", func(h lab.Host) bool { return len(h.TCPPorts) == 0 })
	filtersICMP := hostWhere(t, l, "net3", func(h lab.Host) bool { return slices.Contains(h.TCPPorts, 443) })
	cut := hostWhere(t, l, "net1", func(h lab.Host) bool { return len(h.TCPPorts) > 0 })
	prohibited := hostWhere(t, l, "net2", func(h lab.Host) bool { return len(h.TCPPorts) > 0 })
	addRoute(t, l, "border", prohibited, unix.RTN_PROHIBIT)
	local := silent(t, l, "net2")
	addRoute(t, l, "vp1", local, unix.RTN_UNREACHABLE)
	if err := l.Cut(context.Background(), "net1"); err != nil {
		t.Fatal(err)
	}
	e := labTCP(t, l, 300*time.Millisecond)
	self := func(a netip.Addr) func(netip.Addr) bool { return func(b netip.Addr) bool { return a == b } }
	none := func(a netip.Addr) bool { return !a.IsValid() }
	router := func(a netip.Addr) bool { return labLinks.Contains(a) }
	tests := []struct {
		name string
		give netip.AddrPort
		want prober.Outcome
		from func(netip.Addr) bool
	}{
		{"listener", netip.AddrPortFrom(listener, 80), prober.Reply, self(listener)},
		{"listener in a network that filters icmp", netip.AddrPortFrom(filtersICMP, 443), prober.Reply, self(filtersICMP)},
		{"reset from a host without listener", netip.AddrPortFrom(closed, 80), prober.Refused, self(closed)},
		{"reset from a listener's other port", netip.AddrPortFrom(listener, 8080), prober.Refused, self(listener)},
		{"silent address", netip.AddrPortFrom(silent(t, l, "net0"), 80), prober.Timeout, none},
		{"behind a cut link", netip.AddrPortFrom(cut, 80), prober.Unreachable, router},
		{"prohibited by the border", netip.AddrPortFrom(prohibited, 443), prober.Unreachable, router},
		{"vantage's own route unreachable", netip.AddrPortFrom(local, 80), prober.Error, none},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := prober.Target{Kind: prober.KindTCP, Addr: tt.give.Addr(), Port: tt.give.Port()}
			r := probeWait(t, e, tg)
			if r.Outcome != tt.want || !tt.from(r.Responder) {
				t.Fatalf("%s from %s (%s), want %s", r.Outcome, r.Responder, r.Err, tt.want)
			}
			if r.Target != tg {
				t.Errorf("target %s, want %s", r.Target, tg)
			}
			if tt.want != prober.Timeout && tt.want != prober.Error && (r.RTT <= 0 || r.RTT > time.Second) {
				t.Errorf("rtt %v", r.RTT)
			}
			if (tt.want == prober.Error) != (r.Err != "") {
				t.Errorf("outcome %s with Err %q", r.Outcome, r.Err)
			}
		})
	}
	want := prober.TCPStats{Sent: 8, Replies: 2, Refused: 2, Timeouts: 1, Unreachable: 2, Errors: 1}
	if st := e.Stats(); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	for _, s := range []string{"10.0.0.1", "8.8.8.8", "198.20.0.1"} {
		a := netip.MustParseAddr(s)
		err := e.Probe(context.Background(), prober.Target{Kind: prober.KindTCP, Addr: a, Port: 80},
			func(prober.Result) { t.Errorf("done called for refused %s", a) })
		if !errors.Is(err, prober.ErrRefused) {
			t.Errorf("Probe(%s) = %v, want ErrRefused", a, err)
		}
	}
	if st := e.Stats(); st.Sent != want.Sent {
		t.Errorf("refused targets counted as sent: %+v", st)
	}
}

func TestTCPCloseCompletesInFlight(t *testing.T) {
	l := upLab(t, false)
	e := labTCP(t, l, time.Hour)
	ch := make(chan prober.Result, 1)
	tg := prober.Target{Kind: prober.KindTCP, Addr: silent(t, l, "net0"), Port: 80}
	if err := e.Probe(context.Background(), tg, func(r prober.Result) { ch <- r }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	e.Close()
	select {
	case r := <-ch:
		if r.Outcome != prober.Error {
			t.Errorf("closed probe: %s, want error", r.Outcome)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close left a probe without a result")
	}
	if err := e.Probe(context.Background(), tg, func(prober.Result) {}); !errors.Is(err, prober.ErrClosed) {
		t.Errorf("Probe after Close = %v, want ErrClosed", err)
	}
}
