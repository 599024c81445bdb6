package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Server holds the lab's listening sockets: a TCP listener per configured
// host and port, and a DNS server (UDP and TCP) per zone. Each socket was
// opened inside its host's namespace and stays there.
type Server struct {
	log  *slog.Logger
	tcp  []net.Listener
	dns  []*dns.Server
	once sync.Once
}

// Serve opens the lab's listeners and serves until ctx ends.
func (l *Lab) Serve(ctx context.Context, log *slog.Logger) error {
	s, err := l.Listen(log)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Listen opens every listener of the lab without serving yet, so a caller
// knows they are all open (connections queue in the kernel meanwhile).
// Sockets are bound with IP_FREEBIND, so a host whose address is gone
// (decayed) still gets its listener, which answers again once the address
// is back.
func (l *Lab) Listen(log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{log: log}
	type svc struct {
		role  string
		addr  netip.Addr
		ports []uint16
		zone  string
		hosts map[string]netip.Addr // A records of the zone
	}
	var svcs []svc
	for _, c := range l.cfg.Control {
		z := map[string]netip.Addr{}
		if c.DNS != "" {
			z["ns."+c.DNS] = c.Addr
		}
		svcs = append(svcs, svc{role: roleTransit, addr: c.Addr, ports: c.TCP, zone: c.DNS, hosts: z})
	}
	for i, nw := range l.cfg.Country.Networks {
		hosts := l.plan.hosts[i]
		for _, h := range hosts {
			v := svc{role: nw.Name, addr: h.Addr, ports: h.TCPPorts, zone: h.DNSZone}
			if h.DNSZone != "" {
				v.hosts = map[string]netip.Addr{"ns." + h.DNSZone: h.Addr}
				for _, o := range hosts {
					v.hosts[hostName(o.Addr)+"."+h.DNSZone] = o.Addr
				}
			}
			svcs = append(svcs, v)
		}
	}
	lc := net.ListenConfig{Control: freebind}
	for _, v := range svcs {
		err := l.Do(v.role, func() error {
			for _, p := range v.ports {
				ln, err := lc.Listen(context.Background(), "tcp4", netip.AddrPortFrom(v.addr, p).String())
				if err != nil {
					return err
				}
				s.tcp = append(s.tcp, ln)
			}
			if v.zone == "" {
				return nil
			}
			ap := netip.AddrPortFrom(v.addr, 53).String()
			pc, err := lc.ListenPacket(context.Background(), "udp4", ap)
			if err != nil {
				return err
			}
			ln, err := lc.Listen(context.Background(), "tcp4", ap)
			if err != nil {
				pc.Close()
				return err
			}
			z := zone{name: v.zone, ns: v.addr, hosts: v.hosts}
			s.dns = append(s.dns, &dns.Server{PacketConn: pc, Listener: ln, Handler: z})
			return nil
		})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("listen in %s on %s: %w", l.Namespace(v.role), v.addr, err)
		}
	}
	return s, nil
}

func freebind(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// hostName names an address inside a zone: 198.19.1.37 → "h198-19-1-37".
func hostName(a netip.Addr) string { return "h" + strings.ReplaceAll(a.String(), ".", "-") }

// Serve accepts TCP connections (and closes them at once: a completed
// handshake is all a probe asks) and answers DNS queries until ctx ends,
// then closes every socket.
func (s *Server) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, len(s.dns))
	for _, ln := range s.tcp {
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						s.log.Warn("accept", "addr", ln.Addr(), "err", err)
					}
					return
				}
				c.Close()
			}
		})
	}
	for _, d := range s.dns {
		wg.Go(func() {
			if err := d.ActivateAndServe(); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("dns on %s: %w", d.PacketConn.LocalAddr(), err)
			}
		})
	}
	s.log.Info("lab serving", "tcp_listeners", len(s.tcp), "dns_servers", len(s.dns))
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.Close()
	wg.Wait()
	return err
}

// Close closes every socket.
func (s *Server) Close() error {
	s.once.Do(func() {
		for _, ln := range s.tcp {
			ln.Close()
		}
		for _, d := range s.dns {
			// Shutdown fails for a server that never started; close the
			// sockets ourselves either way.
			d.Shutdown()
			d.PacketConn.Close()
			d.Listener.Close()
		}
	})
	return nil
}

// zone answers authoritatively for one zone: SOA and NS at the apex, A
// records for the name server and the zone's hosts, NXDOMAIN for other
// names inside it and REFUSED outside it.
type zone struct {
	name  string
	ns    netip.Addr
	hosts map[string]netip.Addr
}

func (z zone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	if len(r.Question) != 1 {
		m.SetRcode(r, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	if !dns.IsSubDomain(z.name, name) || q.Qclass != dns.ClassINET {
		m.SetRcode(r, dns.RcodeRefused)
		w.WriteMsg(m)
		return
	}
	m.Authoritative = true
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: z.name, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns." + z.name, Mbox: "hostmaster." + z.name, Serial: 2014122201,
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60}
	nsRR := &dns.NS{Hdr: dns.RR_Header{Name: z.name, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 60}, Ns: "ns." + z.name}
	a, isHost := z.hosts[name]
	switch {
	case name == z.name && (q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY):
		m.Answer = append(m.Answer, soa)
	case name == z.name && q.Qtype == dns.TypeNS:
		m.Answer = append(m.Answer, nsRR)
	case isHost && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A: a.AsSlice()})
	case name == z.name || isHost:
		m.Ns = append(m.Ns, soa) // the name exists, without data of that type
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, soa)
	}
	w.WriteMsg(m)
}
