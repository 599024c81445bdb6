//go:build linux

package prober_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/labtest"
)

// Tests with sockets run in the lab (prober/lab): vantage vp1 probes the
// country's networks 198.19.0.0/24 … 198.19.3.0/24 through the transit,
// the border and the country router. They need root; they skip without
// it, and fail instead when CUTOFF_REQUIRE_LAB=1.

// benchAnyIP is the AnyIP range the benchmark lab adds to the country:
// every address answers ICMP echo.
var benchAnyIP = netip.MustParsePrefix("198.19.128.0/17")

// labOnly allows the lab and nothing else: everything outside
// 198.18.0.0/15 is opted out, so not even a public address can be probed
// by a test.
var labOnly = func() prober.Policy {
	p := prober.Policy{Allow: []netip.Prefix{prober.Lab}}
	for _, s := range []string{"0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/6", "196.0.0.0/7",
		"198.0.0.0/12", "198.16.0.0/15", "198.20.0.0/14", "198.24.0.0/13", "198.32.0.0/11",
		"198.64.0.0/10", "198.128.0.0/9", "199.0.0.0/8", "200.0.0.0/5", "208.0.0.0/4",
		"224.0.0.0/3", "::/0"} {
		p.OptOut = append(p.OptOut, netip.MustParsePrefix(s))
	}
	return p
}()

func TestLabOnlyPolicy(t *testing.T) {
	tests := []struct {
		name string
		give string
		want bool
	}{
		{"lab low end", "198.18.0.0", true},
		{"lab high end", "198.19.255.255", true},
		{"just below", "198.17.255.255", false},
		{"just above", "198.20.0.0", false},
		{"public", "175.45.176.1", false},
		{"private", "10.0.0.1", false},
		{"ipv6", "2001:4860::1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := labOnly.Check(netip.MustParseAddr(tt.give)) == nil; got != tt.want {
				t.Errorf("allowed(%s) = %v, want %v", tt.give, got, tt.want)
			}
		})
	}
}

func upLab(t testing.TB, anyIP bool) *lab.Lab {
	t.Helper()
	cfg := lab.Default()
	if anyIP {
		cfg.Country.AnyIP = benchAnyIP
	}
	return labtest.Up(t, cfg)
}

// labLinks is where the lab numbers its links, hence its routers.
var labLinks = lab.Default().Links

// in runs mk inside the lab namespace of role (sockets it opens stay
// there) and closes what it made when the test ends.
func in[E interface{ Close() error }](t testing.TB, l *lab.Lab, role string, mk func() (E, error)) E {
	t.Helper()
	var e E
	err := l.Do(role, func() error {
		var err error
		e, err = mk()
		return err
	})
	if err != nil {
		t.Fatalf("in %s: %v", role, err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// network returns the lab's network by name.
func network(t testing.TB, l *lab.Lab, name string) lab.NetworkInfo {
	t.Helper()
	for _, nw := range l.Networks() {
		if nw.Name == name {
			return nw
		}
	}
	t.Fatalf("no network %s", name)
	return lab.NetworkInfo{}
}

// hostWhere returns the first host of network name that ok accepts.
func hostWhere(t testing.TB, l *lab.Lab, name string, ok func(lab.Host) bool) netip.Addr {
	t.Helper()
	for _, h := range network(t, l, name).Hosts {
		if ok(h) {
			return h.Addr
		}
	}
	t.Fatalf("no suitable host in %s", name)
	return netip.Addr{}
}

// silent returns an address of network name that is no host: the lab
// drops what is sent to it.
func silent(t testing.TB, l *lab.Lab, name string) netip.Addr {
	t.Helper()
	return silents(t, l, name, 1)[0]
}

// silents returns n addresses of network name that are no host.
func silents(t testing.TB, l *lab.Lab, name string, n int) []netip.Addr {
	t.Helper()
	nw := network(t, l, name)
	var out []netip.Addr
	for a := nw.Prefix.Addr().Next(); nw.Prefix.Contains(a) && len(out) < n; a = a.Next() {
		if !slices.ContainsFunc(nw.Hosts, func(h lab.Host) bool { return h.Addr == a }) {
			out = append(out, a)
		}
	}
	if len(out) < n {
		t.Fatalf("%s has fewer than %d silent addresses", name, n)
	}
	return out
}

// addRoute adds a route of type typ (unix.RTN_PROHIBIT, RTN_UNREACHABLE)
// for a single address in the namespace of role.
func addRoute(t testing.TB, l *lab.Lab, role string, a netip.Addr, typ int) {
	t.Helper()
	err := l.Do(role, func() error {
		return netlink.RouteAdd(&netlink.Route{
			Dst:  &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)},
			Type: typ,
		})
	})
	if err != nil {
		t.Fatalf("route %d %s in %s: %v", typ, a, role, err)
	}
}

// probeWait sends one probe and waits for its result, failing if done
// runs twice.
func probeWait(t *testing.T, p prober.Prober, tg prober.Target) prober.Result {
	t.Helper()
	ch := make(chan prober.Result, 2)
	if err := p.Probe(context.Background(), tg, func(r prober.Result) { ch <- r }); err != nil {
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
	return prober.Result{}
}

// readSNMP returns a counter of /proc/net/snmp ("Icmp", "OutEchoReps")
// inside the lab namespace of role, read through thread-self because
// /proc/self/net follows the main thread's namespace.
func readSNMP(t testing.TB, l *lab.Lab, role, group, field string) uint64 {
	t.Helper()
	var v uint64
	err := l.Do(role, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(names) == 0 || names[0] != group+":" || len(vals) != len(names) {
				continue
			}
			for j, name := range names {
				if name == field {
					_, err := fmt.Sscan(vals[j], &v)
					return err
				}
			}
		}
		return fmt.Errorf("no %s %s in /proc/net/snmp", group, field)
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Packet helpers for the injector (the engine's own are unexported).

func inetChecksum(b []byte) uint16 {
	var s uint32
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

func fixChecksum(b []byte) []byte {
	binary.BigEndian.PutUint16(b[2:4], 0)
	binary.BigEndian.PutUint16(b[2:4], inetChecksum(b))
	return b
}

// echoReply turns a captured echo request into the reply its target
// would send.
func echoReply(req []byte) []byte {
	b := bytes.Clone(req)
	b[0] = 0
	return fixChecksum(b)
}

func ipv4Packet(src, dst netip.Addr, proto byte, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:4], uint16(20+len(payload)))
	h[8] = 64
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	return append(h, payload...)
}

// injector is a raw socket in a country namespace that sees the echo
// requests reaching it and sends hand-made ICMP from any source address,
// as an off-path forger or a replaying middlebox would.
type injector struct{ fd int }

func newInjector(t *testing.T, l *lab.Lab, role string) *injector {
	t.Helper()
	var in injector
	err := l.Do(role, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		in.fd = fd
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_HDRINCL, 1); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(2 * time.Second))
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(in.fd) })
	return &in
}

// capture returns the ICMP part of the next echo request to dst.
func (in *injector) capture(t *testing.T, dst netip.Addr) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	for {
		k, _, err := unix.Recvfrom(in.fd, buf, 0)
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		if k < 28 || buf[9] != 1 || netip.AddrFrom4([4]byte(buf[16:20])) != dst {
			continue
		}
		m := buf[int(buf[0]&0x0f)<<2 : k]
		if m[0] == 8 {
			return bytes.Clone(m)
		}
	}
}

// send sends ICMP message m from src to dst.
func (in *injector) send(t *testing.T, src, dst netip.Addr, m []byte) {
	t.Helper()
	if err := unix.Sendto(in.fd, ipv4Packet(src, dst, 1, m), 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
		t.Fatalf("inject: %v", err)
	}
}
