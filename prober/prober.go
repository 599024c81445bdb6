// Package prober is what runs on a vantage point: probe engines that send
// ICMP echo, TCP connect and DNS probes and match every answer to its
// question. Targets come in from the scheduler (prober/sched); results go
// out through a callback to whoever stores them (prober/agent).
//
// Every engine enforces a Policy before sending anything, so no caller can
// aim a probe at reserved, private, loopback or multicast space, or at a
// network that opted out, unless that space is explicitly allowed.
package prober

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Kind is a probe protocol.
type Kind uint8

const (
	KindICMP Kind = iota + 1
	KindTCP
	KindDNS
)

func (k Kind) String() string {
	switch k {
	case KindICMP:
		return "icmp"
	case KindTCP:
		return "tcp"
	case KindDNS:
		return "dns"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// ParseKind parses "icmp", "tcp" or "dns".
func ParseKind(s string) (Kind, error) {
	switch s {
	case "icmp":
		return KindICMP, nil
	case "tcp":
		return KindTCP, nil
	case "dns":
		return KindDNS, nil
	}
	return 0, fmt.Errorf("unknown probe kind %q (want icmp, tcp or dns)", s)
}

// Outcome is what became of a probe.
type Outcome uint8

const (
	// Timeout: nothing (acceptable) came back in time. It is weak
	// evidence: silence is also what a filtered or idle host gives.
	Timeout Outcome = iota
	// Reply: the target answered (echo reply, TCP handshake completed,
	// a well-formed DNS answer of any rcode).
	Reply
	// Refused: the target actively refused (TCP reset). The host is
	// reachable, so for reachability this counts like Reply.
	Refused
	// Unreachable: an ICMP error (destination unreachable, time
	// exceeded) quoting our probe came back; Result.Responder names the
	// router that sent it.
	Unreachable
	// Error: the probe could not be sent or its answer not read (a local
	// failure, not evidence about the target).
	Error
)

func (o Outcome) String() string {
	switch o {
	case Timeout:
		return "timeout"
	case Reply:
		return "reply"
	case Refused:
		return "refused"
	case Unreachable:
		return "unreachable"
	case Error:
		return "error"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// Reached reports whether the outcome proves the target's host is
// reachable from the vantage.
func (o Outcome) Reached() bool { return o == Reply || o == Refused }

// Target is one thing to probe.
type Target struct {
	Kind Kind
	Addr netip.Addr
	Port uint16 // TCP and DNS
	// Qname is the DNS name whose SOA is asked for; "" asks for the root.
	Qname string
}

func (t Target) String() string {
	switch t.Kind {
	case KindTCP:
		return fmt.Sprintf("tcp %s", netip.AddrPortFrom(t.Addr, t.Port))
	case KindDNS:
		return fmt.Sprintf("dns %s %s", netip.AddrPortFrom(t.Addr, t.Port), t.Qname)
	}
	return fmt.Sprintf("%s %s", t.Kind, t.Addr)
}

// Result is the outcome of one probe.
type Result struct {
	Target  Target
	Sent    time.Time     // when the probe left, by this vantage's clock
	RTT     time.Duration // for Reply, Refused and Unreachable
	Outcome Outcome
	// Responder is the address that answered: the target itself, or the
	// router that reported it unreachable.
	Responder netip.Addr
	Rcode     int    // DNS response code, for DNS replies
	Err       string // for Error: what went wrong
}

// ErrBadTarget is wrapped by the error Probe returns for a target the
// engine cannot probe at all (another kind, no port, an IPv6 address to
// the IPv4 echo engine, a malformed DNS name): a mistake in the plan, not
// a refusal by policy. Nothing is sent, and the rate limiter is not
// consulted.
var ErrBadTarget = errors.New("bad target")

// Prober sends probes of one kind.
type Prober interface {
	// Probe sends one probe to t and arranges for done to be called
	// exactly once with its result, when the answer arrives or the
	// timeout passes. done may run on another goroutine and must not
	// block. Probe may wait to honour a rate limit; if it returns an
	// error (ctx ended, target refused by policy, engine closed) the
	// probe was not sent and done is never called.
	Probe(ctx context.Context, t Target, done func(Result)) error
}
