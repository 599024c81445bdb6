package prober

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newICMPIn opens an ICMP engine inside namespace ns.
func newICMPIn(t testing.TB, n *testNet, ns string, cfg ICMPConfig) *ICMP {
	t.Helper()
	var e *ICMP
	err := n.Do(ns, func() error {
		var err error
		e, err = NewICMP(cfg)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func labICMPConfig(mode ICMPMode, timeout time.Duration) ICMPConfig {
	return ICMPConfig{
		Config: Config{Policy: labOnly, Limiter: NewLimiter(10000), Timeout: timeout},
		Mode:   mode, Contact: "https://example.org/cutoff-lab",
	}
}

// probeWait sends one probe and waits for its result.
func probeWait(t *testing.T, p Prober, tg Target) Result {
	t.Helper()
	ch := make(chan Result, 2)
	if err := p.Probe(context.Background(), tg, func(r Result) { ch <- r }); err != nil {
		t.Fatalf("Probe(%s): %v", tg, err)
	}
	select {
	case r := <-ch:
		select {
		case r2 := <-ch:
			t.Fatalf("done called twice: %+v then %+v", r, r2)
		case <-time.After(50 * time.Millisecond):
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("Probe(%s): no result after 10s", tg)
	}
	return Result{}
}

func icmpTarget(s string) Target { return Target{Kind: KindICMP, Addr: netip.MustParseAddr(s)} }

func TestICMPOutcomesLab(t *testing.T) {
	n := newTestNet(t)
	for _, mode := range []ICMPMode{ICMPRaw, ICMPPing} {
		t.Run(mode.String(), func(t *testing.T) {
			e := newICMPIn(t, n, n.Vantage, labICMPConfig(mode, 300*time.Millisecond))
			if e.Mode() != mode {
				t.Fatalf("mode %s, want %s", e.Mode(), mode)
			}
			tests := []struct {
				name string
				give string
				want Outcome
				from netip.Addr // responder
			}{
				{"responsive host", "198.19.128.7", Reply, netip.MustParseAddr("198.19.128.7")},
				{"another responsive host", "198.19.255.254", Reply, netip.MustParseAddr("198.19.255.254")},
				{"silent host", netSilent.String(), Timeout, netip.Addr{}},
				{"host unreachable", netUnreach.String(), Unreachable, netRouter},
				{"administratively prohibited", netProhibit.String(), Unreachable, netRouter},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					start := time.Now()
					r := probeWait(t, e, icmpTarget(tt.give))
					if r.Outcome != tt.want || r.Responder != tt.from {
						t.Fatalf("outcome %s from %s (%s), want %s from %s", r.Outcome, r.Responder, r.Err, tt.want, tt.from)
					}
					if r.Target != icmpTarget(tt.give) {
						t.Errorf("result target %s, want %s", r.Target, tt.give)
					}
					if r.Sent.Before(start) || r.Sent.After(time.Now()) {
						t.Errorf("sent %v outside the probe's lifetime", r.Sent)
					}
					if tt.want != Timeout && (r.RTT <= 0 || r.RTT > time.Second) {
						t.Errorf("rtt %v", r.RTT)
					}
				})
			}
			st := e.Stats()
			if st.Replies != 2 || st.Unreachable != 2 || st.Timeouts != 1 || st.Sent != 5 {
				t.Errorf("stats %+v, want 2 replies, 2 unreachable, 1 timeout, 5 sent", st)
			}
		})
	}
}

func TestICMPRefusesOutsideLab(t *testing.T) {
	n := newTestNet(t)
	e := newICMPIn(t, n, n.Vantage, labICMPConfig(ICMPRaw, 300*time.Millisecond))
	before := n.readSNMP(t, n.Vantage, "Icmp", "OutMsgs")
	for _, a := range []string{"10.0.0.1", "127.0.0.1", "8.8.8.8", "175.45.176.1", "224.0.0.1", "0.0.0.0"} {
		err := e.Probe(context.Background(), icmpTarget(a), func(r Result) { t.Errorf("done called for refused %s: %+v", a, r) })
		if !errors.Is(err, ErrRefused) {
			t.Errorf("Probe(%s) = %v, want ErrRefused", a, err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if after := n.readSNMP(t, n.Vantage, "Icmp", "OutMsgs"); after != before {
		t.Errorf("vantage sent %d ICMP messages for refused targets", after-before)
	}
	if st := e.Stats(); st.Sent != 0 {
		t.Errorf("engine counted %d sent", st.Sent)
	}
}

func TestICMPCloseCompletesInFlight(t *testing.T) {
	n := newTestNet(t)
	e := newICMPIn(t, n, n.Vantage, labICMPConfig(ICMPRaw, time.Hour))
	ch := make(chan Result, 1)
	if err := e.Probe(context.Background(), icmpTarget(netSilent.String()), func(r Result) { ch <- r }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.Outcome != Error {
		t.Errorf("in-flight probe closed with %s, want error", r.Outcome)
	}
	if err := e.Probe(context.Background(), icmpTarget("198.19.128.1"), func(Result) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Probe after Close = %v, want ErrClosed", err)
	}
}

// injector is a raw socket in the country namespace that sees the echo
// requests reaching it and sends hand-made ICMP with any source address,
// as an off-path forger or a replaying middlebox would.
type injector struct {
	fd int
}

func newInjector(t *testing.T, n *testNet) *injector {
	t.Helper()
	var in injector
	err := n.Do(n.Country, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_HDRINCL, 1); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(2 * time.Second))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		in.fd = fd
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(in.fd) })
	return &in
}

// capture returns the next echo request to dst that reaches the country.
func (in *injector) capture(t *testing.T, dst [4]byte) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	for {
		k, _, err := unix.Recvfrom(in.fd, buf, 0)
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		_, m, ok := parseIPv4(buf[:k])
		if ok && len(m) > 0 && m[0] == icmpEcho && [4]byte(buf[16:20]) == dst {
			return append([]byte(nil), m...)
		}
	}
}

// send sends the ICMP message m from src to the vantage.
func (in *injector) send(t *testing.T, src [4]byte, m []byte) {
	t.Helper()
	pkt := ipv4Packet(src, netVantage.As4(), 1, m)
	if err := unix.Sendto(in.fd, pkt, 0, &unix.SockaddrInet4{Addr: netVantage.As4()}); err != nil {
		t.Fatalf("inject: %v", err)
	}
}

func TestICMPRejectsForgedRepliesLab(t *testing.T) {
	n := newTestNet(t)
	for _, mode := range []ICMPMode{ICMPRaw, ICMPPing} {
		t.Run(mode.String(), func(t *testing.T) {
			const timeout = 400 * time.Millisecond
			e := newICMPIn(t, n, n.Vantage, labICMPConfig(mode, timeout))
			in := newInjector(t, n)
			target := netip.MustParseAddr("198.19.140.9")
			dst := target.As4()
			ch := make(chan Result, 4)
			if err := e.Probe(context.Background(), icmpTarget(target.String()), func(r Result) { ch <- r }); err != nil {
				t.Fatal(err)
			}
			req := in.capture(t, dst)
			if r := <-ch; r.Outcome != Reply {
				t.Fatalf("genuine probe: %s, want reply", r.Outcome)
			}
			base := e.Stats()

			// Forged: our identifier and sequence, a guessed cookie.
			forged := reply(req)
			binary.BigEndian.PutUint64(forged[echoPayloadOff+16:], 0xdeadbeefcafef00d)
			in.send(t, dst, fixChecksum(forged))
			// Forged: a valid reply claimed by another source.
			in.send(t, [4]byte{198, 19, 140, 10}, reply(req))
			// Wrong identifier (a ping socket's kernel drops these
			// before we see them).
			wrong := reply(req)
			wrong[4] ^= 0xff
			in.send(t, dst, fixChecksum(wrong))
			// Duplicated and replayed: the genuine reply again, twice.
			in.send(t, dst, reply(req))
			in.send(t, dst, reply(req))
			waitStats(t, e, func(s ICMPStats) bool {
				return s.Forged-base.Forged >= 2 && s.Duplicate-base.Duplicate >= 2
			})
			// Replayed after the probe's timeout: stale.
			time.Sleep(timeout + 50*time.Millisecond)
			in.send(t, dst, reply(req))
			waitStats(t, e, func(s ICMPStats) bool { return s.Stale-base.Stale >= 1 })

			st := e.Stats()
			if mode == ICMPRaw && st.WrongID-base.WrongID != 1 {
				t.Errorf("wrong-id replies counted %d, want 1", st.WrongID-base.WrongID)
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

func waitStats(t *testing.T, e *ICMP, ok func(ICMPStats) bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !ok(e.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("stats never got there: %+v", e.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestICMPMixedLoadLab interleaves unreachable, silent and responsive
// targets in a burst: ICMP errors must not disturb other probes (on ping
// sockets an error also sets the socket's pending error, which the next
// read or write reports). Only two unreachables per mode: the router's
// kernel sends at most five such errors per source before limiting them
// to one a second.
func TestICMPMixedLoadLab(t *testing.T) {
	n := newTestNet(t)
	for _, mode := range []ICMPMode{ICMPRaw, ICMPPing} {
		t.Run(mode.String(), func(t *testing.T) {
			e := newICMPIn(t, n, n.Vantage, labICMPConfig(mode, 500*time.Millisecond))
			const rounds = 200
			ch := make(chan Result, 3*rounds)
			var count int
			want := map[netip.Addr]Outcome{}
			for i := range rounds {
				kinds := []struct {
					base netip.Addr
					o    Outcome
				}{{netSilent, Timeout}, {netip.MustParseAddr("198.19.130.0"), Reply}, {netUnreach, Unreachable}}
				if i%100 != 50 {
					kinds = kinds[:2]
				}
				for _, tg := range kinds {
					a := tg.base.As4()
					a[3] = byte(i)
					want[netip.AddrFrom4(a)] = tg.o
					count++
					if err := e.Probe(context.Background(), Target{Kind: KindICMP, Addr: netip.AddrFrom4(a)}, func(r Result) { ch <- r }); err != nil {
						t.Fatal(err)
					}
				}
			}
			for range count {
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
