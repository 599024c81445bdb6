//go:build linux

package prober_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab/labtest"
)

// waitCounter is a Limiter that counts how often an engine asked it for
// permission to send.
type waitCounter struct{ n atomic.Int64 }

func (w *waitCounter) Wait(context.Context) error {
	w.n.Add(1)
	return nil
}

// TestProbeRejectsBadTargets gives each engine targets it cannot probe.
// Each must be refused with ErrBadTarget before anything else happens: no
// packet, no wait on the rate limiter, no result. None of this needs the
// lab; the engines' sockets are opened in the test's own namespace and,
// should a check ever be lost, a policy that opts out every address keeps
// the probe from leaving (the error then wraps ErrRefused, and the test
// fails).
func TestProbeRejectsBadTargets(t *testing.T) {
	lim := &waitCounter{}
	cfg := prober.Config{
		Limiter: lim,
		Policy:  prober.Policy{OptOut: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}},
	}
	tcp, err := prober.NewTCP(prober.TCPConfig{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	dns, err := prober.NewDNS(prober.DNSConfig{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	// A raw socket needs CAP_NET_RAW, a ping socket the group in
	// net.ipv4.ping_group_range; ICMPAuto takes whichever it may.
	icmp, err := prober.NewICMP(prober.ICMPConfig{Config: cfg})
	if err != nil {
		labtest.Require(t) // skips unless root, or CUTOFF_REQUIRE_LAB=1 fails it
		t.Fatal(err)
	}
	defer icmp.Close()

	v4 := netip.MustParseAddr("192.0.2.1")
	v6 := netip.MustParseAddr("2001:db8::1")
	tests := []struct {
		name string
		give prober.Prober
		t    prober.Target
		want string // in the error
	}{
		{"icmp target to tcp", tcp, prober.Target{Kind: prober.KindICMP, Addr: v4}, "cannot probe icmp"},
		{"dns target to tcp", tcp, prober.Target{Kind: prober.KindDNS, Addr: v4, Port: 53}, "cannot probe dns"},
		{"tcp port 0", tcp, prober.Target{Kind: prober.KindTCP, Addr: v4}, "no port"},
		{"tcp port 0, IPv6", tcp, prober.Target{Kind: prober.KindTCP, Addr: v6}, "no port"},
		{"tcp target to icmp", icmp, prober.Target{Kind: prober.KindTCP, Addr: v4, Port: 80}, "cannot probe tcp"},
		{"no kind to icmp", icmp, prober.Target{Addr: v4}, "cannot probe"},
		{"IPv6 to icmp", icmp, prober.Target{Kind: prober.KindICMP, Addr: v6}, "IPv6"},
		{"tcp target to dns", dns, prober.Target{Kind: prober.KindTCP, Addr: v4, Port: 53}, "cannot probe tcp"},
		{"empty label", dns, prober.Target{Kind: prober.KindDNS, Addr: v4, Qname: "kp..gov."}, "not a domain name"},
		{"label over 63", dns, prober.Target{Kind: prober.KindDNS, Addr: v4, Qname: strings.Repeat("x", 64) + ".kp."}, "not a domain name"},
		{"name over 255", dns, prober.Target{Kind: prober.KindDNS, Addr: v4, Qname: strings.Repeat("abcdefgh.", 30)}, "not a domain name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := lim.n.Load()
			err := tt.give.Probe(context.Background(), tt.t, func(r prober.Result) {
				t.Errorf("done called with %+v", r)
			})
			if !errors.Is(err, prober.ErrBadTarget) || errors.Is(err, prober.ErrRefused) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Probe(%v) = %v; want ErrBadTarget mentioning %q", tt.t, err, tt.want)
			}
			if n := lim.n.Load() - before; n != 0 {
				t.Errorf("the rate limiter was asked %d times for a target never to be sent", n)
			}
		})
	}
	if s := tcp.Stats(); s.Sent != 0 {
		t.Errorf("tcp engine sent %d probes", s.Sent)
	}
	if s := dns.Stats(); s.Sent != 0 {
		t.Errorf("dns engine sent %d probes", s.Sent)
	}
	if s := icmp.Stats(); s.Sent != 0 || s.SendErrors != 0 {
		t.Errorf("icmp engine wrote %d probes (%d failed)", s.Sent, s.SendErrors)
	}
}
