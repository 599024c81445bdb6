//go:build linux

package prober_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
)

var modes = []prober.ICMPMode{prober.ICMPRaw, prober.ICMPPing}

func labICMP(t testing.TB, l *lab.Lab, mode prober.ICMPMode, timeout time.Duration) *prober.ICMP {
	t.Helper()
	e := in(t, l, "vp1", func() (*prober.ICMP, error) {
		return prober.NewICMP(prober.ICMPConfig{
			Config: prober.Config{Policy: labOnly, Limiter: prober.NewLimiter(10000), Timeout: timeout},
			Mode:   mode, Contact: "https://example.org/cutoff-lab",
		})
	})
	if e.Mode() != mode {
		t.Fatalf("engine mode %s, want %s", e.Mode(), mode)
	}
	return e
}

func icmpTarget(a netip.Addr) prober.Target { return prober.Target{Kind: prober.KindICMP, Addr: a} }

func TestICMPOutcomesLab(t *testing.T) {
	l := upLab(t, false)
	responsive := hostWhere(t, l, "net0", func(h lab.Host) bool { return h.ICMP })
	filtered := hostWhere(t, l, "net3", func(lab.Host) bool { return true })
	cut := hostWhere(t, l, "net1", func(h lab.Host) bool { return h.ICMP })
	// The border refuses one host of net2 ("administratively
	// prohibited"); vp1's own routing refuses one of net0.
	prohibited := hostWhere(t, l, "net2", func(h lab.Host) bool { return h.ICMP })
	addRoute(t, l, "border", prohibited, unix.RTN_PROHIBIT)
	local := silent(t, l, "net2")
	addRoute(t, l, "vp1", local, unix.RTN_UNREACHABLE)
	if err := l.Cut(context.Background(), "net1"); err != nil {
		t.Fatal(err)
	}
	routers := func(a netip.Addr) bool { return labLinks.Contains(a) }
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			e := labICMP(t, l, mode, 300*time.Millisecond)
			tests := []struct {
				name string
				give netip.Addr
				want prober.Outcome
				from func(netip.Addr) bool // the responder
			}{
				{"responsive host", responsive, prober.Reply, func(a netip.Addr) bool { return a == responsive }},
				{"silent address", silent(t, l, "net0"), prober.Timeout, netip.Addr.IsValid},
				{"network filtering icmp", filtered, prober.Timeout, netip.Addr.IsValid},
				{"behind a cut link", cut, prober.Unreachable, routers},
				{"prohibited by the border", prohibited, prober.Unreachable, routers},
				{"vantage's own route unreachable", local, prober.Error, netip.Addr.IsValid},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					start := time.Now()
					r := probeWait(t, e, icmpTarget(tt.give))
					if r.Outcome != tt.want {
						t.Fatalf("outcome %s (%s) from %s, want %s", r.Outcome, r.Err, r.Responder, tt.want)
					}
					if tt.want == prober.Timeout || tt.want == prober.Error {
						if r.Responder.IsValid() {
							t.Errorf("responder %s for %s", r.Responder, r.Outcome)
						}
					} else if !tt.from(r.Responder) {
						t.Errorf("responder %s", r.Responder)
					}
					if r.Target != icmpTarget(tt.give) {
						t.Errorf("result target %s, want %s", r.Target, tt.give)
					}
					if r.Sent.Before(start) || r.Sent.After(time.Now()) {
						t.Errorf("sent %v outside the probe's lifetime", r.Sent)
					}
					if (tt.want == prober.Reply || tt.want == prober.Unreachable) && (r.RTT <= 0 || r.RTT > time.Second) {
						t.Errorf("rtt %v", r.RTT)
					}
				})
			}
			st := e.Stats()
			want := prober.ICMPStats{Sent: 5, SendErrors: 1, Replies: 1, Unreachable: 2, Timeouts: 2}
			if st != want {
				t.Errorf("stats %+v, want %+v", st, want)
			}
		})
	}
}

func TestICMPRefusesOutsideLab(t *testing.T) {
	l := upLab(t, false)
	e := labICMP(t, l, prober.ICMPRaw, 300*time.Millisecond)
	before := readSNMP(t, l, "vp1", "Icmp", "OutMsgs")
	for _, s := range []string{"10.0.0.1", "127.0.0.1", "8.8.8.8", "175.45.176.1", "224.0.0.1", "0.0.0.0", "198.20.0.1"} {
		a := netip.MustParseAddr(s)
		err := e.Probe(context.Background(), icmpTarget(a), func(r prober.Result) { t.Errorf("done called for refused %s: %+v", a, r) })
		if !errors.Is(err, prober.ErrRefused) {
			t.Errorf("Probe(%s) = %v, want ErrRefused", a, err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if after := readSNMP(t, l, "vp1", "Icmp", "OutMsgs"); after != before {
		t.Errorf("vantage sent %d ICMP messages for refused targets", after-before)
	}
	if st := e.Stats(); st.Sent != 0 {
		t.Errorf("engine counted %d sent", st.Sent)
	}
}

func TestICMPCloseCompletesInFlight(t *testing.T) {
	l := upLab(t, false)
	e := labICMP(t, l, prober.ICMPRaw, time.Hour)
	ch := make(chan prober.Result, 1)
	if err := e.Probe(context.Background(), icmpTarget(silent(t, l, "net0")), func(r prober.Result) { ch <- r }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if r.Outcome != prober.Error {
			t.Errorf("in-flight probe closed with %s, want error", r.Outcome)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close left a probe without a result")
	}
	err := e.Probe(context.Background(), icmpTarget(silent(t, l, "net0")), func(prober.Result) {})
	if !errors.Is(err, prober.ErrClosed) {
		t.Errorf("Probe after Close = %v, want ErrClosed", err)
	}
}

// TestICMPRejectsForgedRepliesLab sends a genuine probe, captures its
// request where it lands, and then sends the vantage forged, misdirected,
// wrong-ID, duplicated and replayed replies from the target's network.
func TestICMPRejectsForgedRepliesLab(t *testing.T) {
	l := upLab(t, false)
	vantage := l.Vantages()[0].Addr
	target := hostWhere(t, l, "net0", func(h lab.Host) bool { return h.ICMP })
	other := silent(t, l, "net0")
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			const timeout = 400 * time.Millisecond
			e := labICMP(t, l, mode, timeout)
			inj := newInjector(t, l, "net0")
			ch := make(chan prober.Result, 4)
			if err := e.Probe(context.Background(), icmpTarget(target), func(r prober.Result) { ch <- r }); err != nil {
				t.Fatal(err)
			}
			req := inj.capture(t, target)
			if want := "cutoff reachability measurement; opt out: https://example.org/cutoff-lab"; !bytes.HasSuffix(req, []byte(want)) {
				t.Errorf("request payload %q does not end with %q", req, want)
			}
			if r := <-ch; r.Outcome != prober.Reply {
				t.Fatalf("genuine probe: %s, want reply", r.Outcome)
			}
			base := e.Stats()

			// Forged: the right identifier and sequence, a guessed cookie.
			forged := echoReply(req)
			binary.BigEndian.PutUint64(forged[8+16:], 0xdeadbeefcafef00d)
			inj.send(t, target, vantage, fixChecksum(forged))
			// Forged: a genuine reply claimed by another source.
			inj.send(t, other, vantage, echoReply(req))
			// Wrong identifier (a ping socket's kernel drops these
			// before the engine sees them).
			wrong := echoReply(req)
			wrong[4] ^= 0xff
			inj.send(t, target, vantage, fixChecksum(wrong))
			// Duplicated, then replayed: the genuine reply twice more.
			inj.send(t, target, vantage, echoReply(req))
			inj.send(t, target, vantage, echoReply(req))
			waitStats(t, e, func(s prober.ICMPStats) bool {
				return s.Forged-base.Forged >= 2 && s.Duplicate-base.Duplicate >= 2
			})
			// Replayed after the probe's timeout: stale.
			time.Sleep(timeout + 50*time.Millisecond)
			inj.send(t, target, vantage, echoReply(req))
			waitStats(t, e, func(s prober.ICMPStats) bool { return s.Stale-base.Stale >= 1 })

			st := e.Stats()
			wantWrongID := uint64(0)
			if mode == prober.ICMPRaw {
				wantWrongID = 1
			}
			if st.WrongID-base.WrongID != wantWrongID {
				t.Errorf("wrong-id replies counted %d, want %d", st.WrongID-base.WrongID, wantWrongID)
			}
			if st.Forged-base.Forged != 2 || st.Duplicate-base.Duplicate != 2 || st.Stale-base.Stale != 1 {
				t.Errorf("stats %+v after %+v: want 2 forged, 2 duplicate, 1 stale", st, base)
			}
			if st.Replies != base.Replies {
				t.Errorf("forged or replayed replies matched: %d replies, want %d", st.Replies, base.Replies)
			}
			select {
			case r := <-ch:
				t.Errorf("a rejected reply completed a probe: %+v", r)
			default:
			}
		})
	}
}

func waitStats(t *testing.T, e *prober.ICMP, ok func(prober.ICMPStats) bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !ok(e.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("stats never got there: %+v", e.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestICMPMixedLoadLab interleaves silent, responsive and unreachable
// targets in one burst: ICMP errors must not disturb other probes (on a
// ping socket an error also sets the socket's pending error, which the
// next write reports instead of sending). Only two unreachables per mode:
// a router sends at most five errors for "unreachable" routes per source
// before limiting them to one a second (net.ipv4.route.error_cost and
// error_burst, which only the root namespace has).
func TestICMPMixedLoadLab(t *testing.T) {
	l := upLab(t, false)
	if err := l.Cut(context.Background(), "net1"); err != nil {
		t.Fatal(err)
	}
	var responsive []netip.Addr
	for _, nw := range []string{"net0", "net2"} {
		for _, h := range network(t, l, nw).Hosts {
			if h.ICMP {
				responsive = append(responsive, h.Addr)
			}
		}
	}
	unreach := network(t, l, "net1").Hosts
	quiet := silents(t, l, "net0", 100)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			e := labICMP(t, l, mode, 500*time.Millisecond)
			want := map[netip.Addr]prober.Outcome{}
			for i := range 100 {
				want[quiet[i]] = prober.Timeout
				want[responsive[i%len(responsive)]] = prober.Reply
			}
			for _, h := range unreach[:2] {
				want[h.Addr] = prober.Unreachable
			}
			ch := make(chan prober.Result, len(want))
			for a := range want {
				if err := e.Probe(context.Background(), icmpTarget(a), func(r prober.Result) { ch <- r }); err != nil {
					t.Fatal(err)
				}
			}
			for range len(want) {
				r := <-ch
				if w := want[r.Target.Addr]; r.Outcome != w {
					t.Errorf("%s: %s (%s), want %s", r.Target.Addr, r.Outcome, r.Err, w)
				}
			}
			if st := e.Stats(); st.SendErrors != 0 {
				t.Errorf("%d send errors", st.SendErrors)
			}
		})
	}
}

// TestICMPAutoModeLab checks the automatic choice: a raw socket with
// CAP_NET_RAW, else a ping socket (allowed in the lab's vantages by
// net.ipv4.ping_group_range), which then works end to end. Capabilities
// are per thread, so the fallback is provoked by dropping CAP_NET_RAW
// from the effective set of the locked thread only, and restoring it.
func TestICMPAutoModeLab(t *testing.T) {
	l := upLab(t, false)
	target := hostWhere(t, l, "net0", func(h lab.Host) bool { return h.ICMP })
	cfg := prober.ICMPConfig{Config: prober.Config{Policy: labOnly, Timeout: 300 * time.Millisecond}}
	raw := in(t, l, "vp1", func() (*prober.ICMP, error) { return prober.NewICMP(cfg) })
	if raw.Mode() != prober.ICMPRaw {
		t.Errorf("as root: mode %s, want raw", raw.Mode())
	}
	ping := in(t, l, "vp1", func() (*prober.ICMP, error) {
		var e *prober.ICMP
		err := withoutNetRaw(func() error {
			var err error
			e, err = prober.NewICMP(cfg)
			return err
		})
		return e, err
	})
	if ping.Mode() != prober.ICMPPing {
		t.Errorf("without CAP_NET_RAW: mode %s, want ping", ping.Mode())
	}
	if r := probeWait(t, ping, icmpTarget(target)); r.Outcome != prober.Reply {
		t.Errorf("ping-socket probe: %s (%s), want reply", r.Outcome, r.Err)
	}
}

// withoutNetRaw runs fn with CAP_NET_RAW dropped from the calling
// thread's effective capabilities (the caller holds a locked thread).
func withoutNetRaw(fn func() error) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	saved := data
	data[unix.CAP_NET_RAW/32].Effective &^= 1 << (unix.CAP_NET_RAW % 32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return err
	}
	ferr := fn()
	if err := unix.Capset(&hdr, &saved[0]); err != nil {
		panic("cannot restore CAP_NET_RAW on this thread: " + err.Error())
	}
	return ferr
}
