//go:build linux

package prober

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// DNSExchanger sends DNS queries: the one place that knows the DNS
// client library (miekg/dns v1 today; v2 or another library later).
type DNSExchanger interface {
	// ExchangeContext sends m over network ("udp" or "tcp") to addr and
	// reads answers until accept takes one, which it returns, or until
	// ctx ends. accept sees every answer, with the parse error of a
	// malformed one. A network failure is returned as an error; an ICMP
	// error about the query is an *ICMPError.
	ExchangeContext(ctx context.Context, m *dns.Msg, network string, addr netip.AddrPort, accept func(*dns.Msg, error) bool) (*dns.Msg, error)
}

// ICMPError is an ICMP error that ended an exchange: Errno is what the
// kernel made of it, From the router (or host) that sent it.
type ICMPError struct {
	Errno syscall.Errno
	From  netip.Addr
}

func (e *ICMPError) Error() string { return fmt.Sprintf("icmp from %s: %v", e.From, e.Errno) }
func (e *ICMPError) Unwrap() error { return e.Errno }

// DNSConfig configures a DNS engine. The zero value works.
type DNSConfig struct {
	Config
	// Source is the address to query from; the zero Addr lets routing
	// choose.
	Source netip.Addr
	// Zone is the name whose SOA is asked for when a target has no
	// Qname; empty means the root.
	Zone string
	// Exchanger sends the queries; nil uses miekg/dns over sockets in
	// the engine's namespace.
	Exchanger DNSExchanger
}

// DNS probes DNS servers with an SOA query over UDP, retried over TCP
// when the answer is truncated. Any well-formed answer whose ID and
// question match is a Reply, whatever its rcode; others are rejected and
// the probe waits on until its timeout. A port-unreachable or reset is
// Refused (the host is there), an ICMP error from a router Unreachable.
type DNS struct {
	cfg     DNSConfig
	ex      DNSExchanger
	sockets *nsSockets
	ctx     context.Context
	cancel  context.CancelFunc
	close   sync.Once

	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup

	sent, replies, refused, unreachable, timeouts, errors atomic.Uint64
	tcpRetries, malformed, mismatched                     atomic.Uint64
}

var _ Prober = (*DNS)(nil)

// DNSStats counts a DNS engine's probes by outcome and the answers it
// rejected.
type DNSStats struct {
	Sent, Replies, Refused, Unreachable, Timeouts, Errors uint64
	TCPRetries                                            uint64 // UDP answers that were truncated
	Malformed                                             uint64 // answers that did not parse
	Mismatched                                            uint64 // answers whose ID or question did not match
}

// NewDNS makes a DNS engine whose sockets live in the network namespace
// of the calling thread.
func NewDNS(cfg DNSConfig) (*DNS, error) {
	cfg.Config = cfg.Config.withDefaults()
	s, err := newNSSockets()
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	e := &DNS{cfg: cfg, ex: cfg.Exchanger, sockets: s}
	if e.ex == nil {
		e.ex = &miekgExchanger{sockets: s, src: cfg.Source}
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// Stats returns the engine's counters so far.
func (e *DNS) Stats() DNSStats {
	return DNSStats{
		Sent: e.sent.Load(), Replies: e.replies.Load(), Refused: e.refused.Load(),
		Unreachable: e.unreachable.Load(), Timeouts: e.timeouts.Load(), Errors: e.errors.Load(),
		TCPRetries: e.tcpRetries.Load(), Malformed: e.malformed.Load(), Mismatched: e.mismatched.Load(),
	}
}

// Probe queries the server at t.Addr:t.Port (53 if 0) for the SOA of
// t.Qname (or the configured zone).
func (e *DNS) Probe(ctx context.Context, t Target, done func(Result)) error {
	if t.Kind != KindDNS {
		return fmt.Errorf("dns engine: %w: cannot probe %s", ErrBadTarget, t)
	}
	qname := t.Qname
	if qname == "" {
		qname = e.cfg.Zone
	}
	if qname == "" {
		qname = "."
	}
	if _, ok := dns.IsDomainName(qname); !ok {
		return fmt.Errorf("dns engine: %w: %q is not a domain name", ErrBadTarget, qname)
	}
	if err := e.cfg.admit(ctx, t); err != nil {
		return err
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return ErrClosed
	}
	e.wg.Add(1)
	go e.run(t, dns.Fqdn(qname), done)
	return nil
}

func (e *DNS) run(t Target, qname string, done func(Result)) {
	defer e.wg.Done()
	port := t.Port
	if port == 0 {
		port = 53
	}
	addr := netip.AddrPortFrom(t.Addr.Unmap(), port)
	q := new(dns.Msg)
	q.SetQuestion(qname, dns.TypeSOA)
	// No recursion: a probe must not make the server query others.
	q.RecursionDesired = false
	accept := func(r *dns.Msg, err error) bool {
		switch {
		case err != nil || r == nil:
			e.malformed.Add(1)
			return false
		case !matches(q, r):
			e.mismatched.Add(1)
			return false
		}
		return true
	}
	sent := e.cfg.Now()
	e.sent.Add(1)
	ctx, cancel := context.WithDeadline(e.ctx, sent.Add(e.cfg.Timeout))
	defer cancel()
	r, err := e.ex.ExchangeContext(ctx, q, "udp", addr, accept)
	if err == nil && r.Truncated {
		e.tcpRetries.Add(1)
		r, err = e.ex.ExchangeContext(ctx, q, "tcp", addr, accept)
	}
	at := e.cfg.Now()
	res := Result{Target: t, Sent: sent}
	var ie *ICMPError
	switch {
	case err == nil:
		res.Outcome, res.Responder, res.Rcode = Reply, addr.Addr(), r.Rcode
	case e.ctx.Err() != nil:
		res.Outcome, res.Err = Error, ErrClosed.Error()
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		res.Outcome = Timeout
	case errors.Is(err, syscall.ECONNREFUSED):
		res.Outcome, res.Responder = Refused, addr.Addr()
	case errors.As(err, &ie):
		res.Outcome, res.Responder = Unreachable, ie.From
	default:
		res.Outcome, res.Err = Error, err.Error()
	}
	if res.Outcome != Timeout && res.Outcome != Error {
		res.RTT = at.Sub(sent)
	}
	e.count(res.Outcome)
	done(res)
}

// matches reports whether r answers q: same ID, a response, and the same
// single question (names compared case-insensitively, as DNS does).
func matches(q, r *dns.Msg) bool {
	if !r.Response || r.Id != q.Id || len(r.Question) != 1 {
		return false
	}
	a, b := q.Question[0], r.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

func (e *DNS) count(o Outcome) {
	switch o {
	case Reply:
		e.replies.Add(1)
	case Refused:
		e.refused.Add(1)
	case Unreachable:
		e.unreachable.Add(1)
	case Timeout:
		e.timeouts.Add(1)
	default:
		e.errors.Add(1)
	}
}

// Close stops the engine: queries in progress complete with an Error.
func (e *DNS) Close() error {
	e.close.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		e.cancel()
		e.wg.Wait()
		e.sockets.close()
	})
	return nil
}

// miekgExchanger is the DNSExchanger on miekg/dns v1: it frames and parses
// messages with dns.Conn over sockets opened in the engine's namespace.
type miekgExchanger struct {
	sockets *nsSockets
	src     netip.Addr
}

func (x *miekgExchanger) ExchangeContext(ctx context.Context, m *dns.Msg, network string, addr netip.AddrPort, accept func(*dns.Msg, error) bool) (*dns.Msg, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultTimeout)
	}
	var (
		f  *os.File
		fd int
	)
	switch network {
	case "udp":
		var err error
		if fd, err = x.sockets.socket(addr.Addr(), unix.SOCK_DGRAM); err != nil {
			return nil, err
		}
		f = os.NewFile(uintptr(fd), "dns")
		if x.src.IsValid() {
			if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(x.src, 0))); err != nil {
				f.Close()
				return nil, os.NewSyscallError("bind", err)
			}
		}
		if err := unix.Connect(fd, sockaddr(addr)); err != nil {
			f.Close()
			return nil, os.NewSyscallError("connect", err)
		}
	case "tcp":
		c := connect(x.sockets, x.src, addr, deadline, ctx.Done(), time.Now)
		switch c.outcome {
		case Reply:
			f, fd = c.conn, c.fd
		case Refused:
			return nil, syscall.ECONNREFUSED
		case Unreachable:
			return nil, &ICMPError{Errno: syscall.EHOSTUNREACH, From: c.responder}
		case Timeout:
			return nil, context.DeadlineExceeded
		default:
			return nil, c.err
		}
	default:
		return nil, fmt.Errorf("dns: unknown network %q", network)
	}
	defer f.Close()
	nc, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := nc.SetDeadline(deadline); err != nil {
		return nil, err
	}
	co := &dns.Conn{Conn: nc}
	if err := co.WriteMsg(m); err != nil {
		return nil, icmpOr(fd, err)
	}
	for {
		r, err := co.ReadMsg()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, icmpOr(fd, err)
			}
			if network == "tcp" && !errors.As(err, new(*dns.Error)) {
				return nil, err // a broken stream does not recover
			}
		}
		if accept(r, err) {
			return r, nil
		}
	}
}

// icmpOr turns err into an *ICMPError when it reports an ICMP error
// (other than port unreachable, which means the host is there) queued on
// fd's error queue.
func icmpOr(fd int, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) || errno == syscall.ECONNREFUSED {
		return err
	}
	switch errno {
	case unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN, unix.ENONET, unix.EACCES, unix.EPROTO:
		return &ICMPError{Errno: errno, From: offender(fd)}
	}
	return err
}
