//go:build linux

package prober_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
)

func labDNS(t testing.TB, l *lab.Lab, timeout time.Duration) *prober.DNS {
	t.Helper()
	return in(t, l, "vp1", func() (*prober.DNS, error) {
		return prober.NewDNS(prober.DNSConfig{Config: prober.Config{Policy: labOnly, Timeout: timeout}, Zone: "net0.lab."})
	})
}

const roguePort = 5353

// rogue serves DNS on addr:5353 (UDP and TCP) inside the lab namespace
// of role, misbehaving according to the query name:
//
//	tc.rogue.    truncated over UDP; the full answer over TCP
//	junk.rogue.  wrong ID, wrong name, wrong type, a query instead of a
//	             response, garbage; never the real answer
//	late.rogue.  the same junk, then the real answer with rcode NXDOMAIN
//	case.rogue.  the real answer, its question name in other letter case
func rogue(t *testing.T, l *lab.Lab, role string, addr netip.Addr) {
	t.Helper()
	ap := netip.AddrPortFrom(addr, roguePort).String()
	var (
		pc net.PacketConn
		ln net.Listener
	)
	err := l.Do(role, func() error {
		var err error
		if pc, err = net.ListenPacket("udp4", ap); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", ap)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil || len(q.Question) != 1 {
				continue
			}
			for _, b := range rogueUDP(q) {
				pc.WriteTo(b, from)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			co := &dns.Conn{Conn: c}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if q, err := co.ReadMsg(); err == nil && len(q.Question) == 1 {
				co.WriteMsg(answer(q, dns.RcodeSuccess))
			}
			c.Close()
		}
	}()
}

func answer(q *dns.Msg, rcode int) *dns.Msg {
	r := new(dns.Msg)
	r.SetRcode(q, rcode)
	r.Authoritative = true
	if rcode == dns.RcodeSuccess {
		r.Answer = []dns.RR{&dns.SOA{
			Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
			Ns:  "ns.rogue.", Mbox: "hostmaster.rogue.", Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 60,
		}}
	}
	return r
}

func pack(t interface{ Pack() ([]byte, error) }) []byte {
	b, err := t.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

func junk(q *dns.Msg) [][]byte {
	wrongID := answer(q, dns.RcodeSuccess)
	wrongID.Id ^= 0x5555
	wrongName := answer(q, dns.RcodeSuccess)
	wrongName.Question[0].Name = "other.rogue."
	wrongType := answer(q, dns.RcodeSuccess)
	wrongType.Question[0].Qtype = dns.TypeA
	notResponse := answer(q, dns.RcodeSuccess)
	notResponse.Response = false
	return [][]byte{pack(wrongID), pack(wrongName), pack(wrongType), pack(notResponse), {0x12, 0x34, 0x81}}
}

func rogueUDP(q *dns.Msg) [][]byte {
	switch strings.ToLower(q.Question[0].Name) {
	case "tc.rogue.":
		r := answer(q, dns.RcodeSuccess)
		r.Answer, r.Truncated = nil, true
		return [][]byte{pack(r)}
	case "junk.rogue.":
		return junk(q)
	case "late.rogue.":
		return append(junk(q), pack(answer(q, dns.RcodeNameError)))
	case "case.rogue.":
		r := answer(q, dns.RcodeSuccess)
		r.Question[0].Name = "CaSe.RoGuE."
		return [][]byte{pack(r)}
	}
	return [][]byte{pack(answer(q, dns.RcodeRefused))}
}

func TestDNSOutcomesLab(t *testing.T) {
	l := upLab(t, false)
	server := hostWhere(t, l, "net0", func(h lab.Host) bool { return h.DNSZone != "" })
	noDNS := hostWhere(t, l, "net0", func(h lab.Host) bool { return h.DNSZone == "" })
	filtersICMP := hostWhere(t, l, "net3", func(h lab.Host) bool { return h.DNSZone != "" })
	prohibited := hostWhere(t, l, "net2", func(h lab.Host) bool { return h.DNSZone != "" })
	addRoute(t, l, "border", prohibited, unix.RTN_PROHIBIT)
	rogueHost := hostWhere(t, l, "net1", func(h lab.Host) bool { return h.DNSZone == "" })
	rogue(t, l, "net1", rogueHost)
	e := labDNS(t, l, 400*time.Millisecond)
	self := func(a netip.Addr) func(netip.Addr) bool { return func(b netip.Addr) bool { return a == b } }
	none := func(a netip.Addr) bool { return !a.IsValid() }
	tests := []struct {
		name      string
		give      prober.Target
		want      prober.Outcome
		wantRcode int
		from      func(netip.Addr) bool
		delta     prober.DNSStats // expected change of the rejection counters
	}{
		{name: "lab server, configured zone", give: dnsTarget(server, 53, ""), want: prober.Reply, from: self(server)},
		{name: "lab server, its own zone", give: dnsTarget(filtersICMP, 53, "net3.lab."), want: prober.Reply, from: self(filtersICMP)},
		{name: "no server: port unreachable", give: dnsTarget(noDNS, 53, ""), want: prober.Refused, from: self(noDNS)},
		{name: "silent address", give: dnsTarget(silent(t, l, "net0"), 53, ""), want: prober.Timeout, from: none},
		{name: "prohibited by the border", give: dnsTarget(prohibited, 53, ""), want: prober.Unreachable,
			from: func(a netip.Addr) bool { return labLinks.Contains(a) }},
		{name: "truncated: retried over tcp", give: dnsTarget(rogueHost, roguePort, "tc.rogue."), want: prober.Reply,
			from: self(rogueHost), delta: prober.DNSStats{TCPRetries: 1}},
		{name: "only mismatched and malformed answers", give: dnsTarget(rogueHost, roguePort, "junk.rogue."), want: prober.Timeout,
			from: none, delta: prober.DNSStats{Mismatched: 4, Malformed: 1}},
		{name: "the real answer after junk", give: dnsTarget(rogueHost, roguePort, "late.rogue."), want: prober.Reply,
			wantRcode: dns.RcodeNameError, from: self(rogueHost), delta: prober.DNSStats{Mismatched: 4, Malformed: 1}},
		{name: "question in other letter case", give: dnsTarget(rogueHost, roguePort, "case.rogue."), want: prober.Reply, from: self(rogueHost)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.Stats()
			r := probeWait(t, e, tt.give)
			if r.Outcome != tt.want || r.Rcode != tt.wantRcode || !tt.from(r.Responder) {
				t.Fatalf("%s rcode %d from %s (%s), want %s rcode %d", r.Outcome, r.Rcode, r.Responder, r.Err, tt.want, tt.wantRcode)
			}
			if r.Target != tt.give {
				t.Errorf("target %s, want %s", r.Target, tt.give)
			}
			if tt.want != prober.Timeout && (r.RTT <= 0 || r.RTT > time.Second) {
				t.Errorf("rtt %v", r.RTT)
			}
			after := e.Stats()
			got := prober.DNSStats{TCPRetries: after.TCPRetries - before.TCPRetries,
				Mismatched: after.Mismatched - before.Mismatched, Malformed: after.Malformed - before.Malformed}
			if got != tt.delta {
				t.Errorf("rejections %+v, want %+v", got, tt.delta)
			}
		})
	}
	st := e.Stats()
	if st.Sent != 9 || st.Replies != 5 || st.Refused != 1 || st.Timeouts != 2 || st.Unreachable != 1 || st.Errors != 0 {
		t.Errorf("stats %+v", st)
	}
	for _, s := range []string{"10.0.0.1", "8.8.8.8", "198.20.0.1"} {
		err := e.Probe(context.Background(), dnsTarget(netip.MustParseAddr(s), 53, ""), func(prober.Result) { t.Errorf("done called for refused %s", s) })
		if !errors.Is(err, prober.ErrRefused) {
			t.Errorf("Probe(%s) = %v, want ErrRefused", s, err)
		}
	}
	if e.Stats().Sent != st.Sent {
		t.Errorf("refused targets counted as sent")
	}
}

func dnsTarget(a netip.Addr, port uint16, qname string) prober.Target {
	return prober.Target{Kind: prober.KindDNS, Addr: a, Port: port, Qname: qname}
}

func TestDNSCloseCompletesInFlight(t *testing.T) {
	l := upLab(t, false)
	e := labDNS(t, l, time.Hour)
	ch := make(chan prober.Result, 1)
	tg := dnsTarget(silent(t, l, "net0"), 53, "")
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
