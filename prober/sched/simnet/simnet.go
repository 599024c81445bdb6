// Package simnet is an in-memory internet for tests and benchmarks: a
// prober.Prober that answers probes from a model of /24 blocks (which
// hosts answer ICMP echo, how often, which TCP ports and DNS servers they
// run, latency, loss, up or down on command), so the scheduler, the agent
// and the correlator can be exercised at the scale of a million blocks
// without sending a packet.
//
// Blocks enter with Add and change with SetDown; probes enter through
// Probe and leave as prober.Results delivered to the caller's done
// callback, after the modelled latency (or the timeout) in virtual time
// (a Clock the test advances) or in real time.
package simnet

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutoffnet/cutoff/prober"
)

// Block models one /24 (or a longer prefix inside one /24).
type Block struct {
	// Hosts are the host octets that answer ICMP echo while the block is
	// up (the block's ever-responsive addresses, as a census would find
	// them).
	Hosts []uint8
	// Avail is the share of time a host of Hosts answers: 1 answers
	// always; 0 means 1.
	Avail float64
	// Churn is how long a host keeps its answering-or-not state before it
	// is drawn again (hosts come and go in periods, as real ones do). 0
	// draws every probe independently.
	Churn time.Duration
	// Loss is the chance that any one probe or its answer is lost.
	Loss float64
	// FilterICMP drops ICMP echo to the block (a firewall) while TCP and
	// DNS still work.
	FilterICMP bool
	// TCP lists open ports by host: a probe to an open port gets Reply; a
	// probe to another port of a host in Hosts or TCP gets Refused (a
	// reset); any other probe times out.
	TCP map[uint8][]uint16
	// DNS lists the hosts that answer DNS queries (rcode 0).
	DNS []uint8
	// Latency and Jitter give the round-trip time: Latency plus up to
	// Jitter, uniformly. Latency 0 means 20ms.
	Latency, Jitter time.Duration
	// Unreachable makes probes to the block, while it is down, come back
	// as Unreachable from the border router (Net.Border) instead of
	// timing out.
	Unreachable bool
	// Down starts the block cut off.
	Down bool
}

// block is Block compiled for speed and size: the million-block
// benchmarks keep one per block.
type block struct {
	hosts   [4]uint64 // bitmap of host octets
	avail   float32
	loss    float32
	churn   time.Duration
	latency time.Duration
	jitter  time.Duration
	svc     *services // nil for the common block without TCP or DNS
	flags   uint8
	probes  uint32
}

type services struct {
	tcp map[uint8][]uint16
	dns [4]uint64
}

const (
	flagDown uint8 = 1 << iota
	flagFilterICMP
	flagUnreachable
)

func (b *block) has(h uint8) bool { return b.hosts[h>>6]&(1<<(h&63)) != 0 }

// Options configure a Net. The zero value works: real time, a 5 s timeout.
type Options struct {
	// Clock is virtual time; nil means real time.
	Clock *Clock
	// Timeout is when a probe without an answer is reported as Timeout; 0
	// means 5 s.
	Timeout time.Duration
	// Seed makes loss and availability draws repeatable.
	Seed uint64
	// Border answers for a down block whose Unreachable is set; the zero
	// Addr means 198.18.255.254 (in the lab range).
	Border netip.Addr
	// Inline calls done before Probe returns, whatever the modelled
	// delay, so tests can check that callers cope with that.
	Inline bool
	// Refuse, when set, is asked about every probe; a non-nil error makes
	// Probe return it without sending (as an engine's policy would).
	Refuse func(prober.Target) error
}

// Net is the simulated internet. It is safe for concurrent use.
type Net struct {
	opts   Options
	mu     sync.Mutex
	blocks map[uint32]*block // by the address's top 24 bits
	rnd    *rand.Rand
	sent   [4]atomic.Int64 // by kind
	closed atomic.Bool
}

// ErrClosed is returned by Probe after Close.
var ErrClosed = errors.New("simnet closed")

// New returns an empty network.
func New(opts Options) *Net {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if !opts.Border.IsValid() {
		opts.Border = netip.AddrFrom4([4]byte{198, 18, 255, 254})
	}
	return &Net{
		opts:   opts,
		blocks: make(map[uint32]*block),
		rnd:    rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15)),
	}
}

func key(a netip.Addr) (uint32, uint8, bool) {
	if !a.Is4() {
		return 0, 0, false
	}
	b := a.As4()
	return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]), b[3], true
}

// Add models the /24 holding p's first address as b, replacing what was
// there.
func (n *Net) Add(p netip.Prefix, b Block) {
	k, _, ok := key(p.Addr())
	if !ok {
		panic("simnet: only IPv4 blocks are modelled")
	}
	c := &block{
		avail:   float32(b.Avail),
		loss:    float32(b.Loss),
		churn:   b.Churn,
		latency: b.Latency,
		jitter:  b.Jitter,
	}
	if c.avail <= 0 {
		c.avail = 1
	}
	if c.latency <= 0 {
		c.latency = 20 * time.Millisecond
	}
	for _, h := range b.Hosts {
		c.hosts[h>>6] |= 1 << (h & 63)
	}
	if len(b.TCP) > 0 || len(b.DNS) > 0 {
		c.svc = &services{tcp: b.TCP}
		for _, h := range b.DNS {
			c.svc.dns[h>>6] |= 1 << (h & 63)
		}
	}
	if b.Down {
		c.flags |= flagDown
	}
	if b.FilterICMP {
		c.flags |= flagFilterICMP
	}
	if b.Unreachable {
		c.flags |= flagUnreachable
	}
	n.mu.Lock()
	n.blocks[k] = c
	n.mu.Unlock()
}

// SetDown cuts off (down true) or restores every modelled block inside p.
func (n *Net) SetDown(p netip.Prefix, down bool) {
	p = p.Masked()
	n.mu.Lock()
	defer n.mu.Unlock()
	if p.Bits() >= 24 {
		k, _, _ := key(p.Addr())
		if b := n.blocks[k]; b != nil {
			setFlag(b, flagDown, down)
		}
		return
	}
	for k, b := range n.blocks {
		a := netip.AddrFrom4([4]byte{byte(k >> 16), byte(k >> 8), byte(k), 0})
		if p.Contains(a) {
			setFlag(b, flagDown, down)
		}
	}
}

// SetFilterICMP makes the block holding p's first address drop (or stop
// dropping) ICMP echo.
func (n *Net) SetFilterICMP(p netip.Prefix, filter bool) {
	k, _, _ := key(p.Addr())
	n.mu.Lock()
	defer n.mu.Unlock()
	if b := n.blocks[k]; b != nil {
		setFlag(b, flagFilterICMP, filter)
	}
}

func setFlag(b *block, f uint8, on bool) {
	if on {
		b.flags |= f
	} else {
		b.flags &^= f
	}
}

// Sent counts the probes sent, of one kind or (kind 0) of all kinds.
func (n *Net) Sent(k prober.Kind) int64 {
	if k != 0 {
		return n.sent[k&3].Load()
	}
	return n.sent[1].Load() + n.sent[2].Load() + n.sent[3].Load()
}

// SentTo counts the probes sent into the /24 holding p's first address.
func (n *Net) SentTo(p netip.Prefix) int64 {
	k, _, _ := key(p.Addr())
	n.mu.Lock()
	defer n.mu.Unlock()
	if b := n.blocks[k]; b != nil {
		return int64(b.probes)
	}
	return 0
}

// Close makes later probes fail; probes in flight still get their result.
func (n *Net) Close() { n.closed.Store(true) }

func (n *Net) now() time.Time {
	if n.opts.Clock != nil {
		return n.opts.Clock.Now()
	}
	return time.Now()
}

func (n *Net) after(d time.Duration, f func()) {
	if n.opts.Clock != nil {
		n.opts.Clock.AfterFunc(d, f)
		return
	}
	time.AfterFunc(d, f)
}

// Probe implements prober.Prober.
func (n *Net) Probe(ctx context.Context, t prober.Target, done func(prober.Result)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if n.closed.Load() {
		return ErrClosed
	}
	if t.Kind < prober.KindICMP || t.Kind > prober.KindDNS {
		return errors.New("simnet: unknown probe kind")
	}
	if n.opts.Refuse != nil {
		if err := n.opts.Refuse(t); err != nil {
			return err
		}
	}
	now := n.now()
	r := prober.Result{Target: t, Sent: now, Outcome: prober.Timeout}
	delay := n.opts.Timeout
	k, h, ok := key(t.Addr)
	n.mu.Lock()
	var b *block
	if ok {
		b = n.blocks[k]
	}
	var lost, draw, jit float64
	if b != nil {
		b.probes++
		lost, draw, jit = n.rnd.Float64(), n.rnd.Float64(), n.rnd.Float64()
	}
	var flags uint8
	var bb block
	if b != nil {
		flags, bb = b.flags, *b
	}
	n.mu.Unlock()
	n.sent[t.Kind&3].Add(1)

	if b != nil {
		rtt := bb.latency + time.Duration(jit*float64(bb.jitter))
		switch {
		case flags&flagDown != 0:
			if flags&flagUnreachable != 0 {
				r.Outcome, r.Responder, r.RTT, delay = prober.Unreachable, n.opts.Border, rtt/2, rtt/2
			}
		case lost < float64(bb.loss):
		default:
			if out := answer(&bb, flags, t, h, now, draw, n.opts.Seed); out != prober.Timeout {
				r.Outcome, r.Responder, r.RTT, delay = out, t.Addr, rtt, rtt
			}
		}
	}
	if n.opts.Inline {
		done(r)
		return nil
	}
	n.after(delay, func() { done(r) })
	return nil
}

// answer is what a probe to an up block gets, loss aside.
func answer(b *block, flags uint8, t prober.Target, h uint8, now time.Time, draw float64, seed uint64) prober.Outcome {
	switch t.Kind {
	case prober.KindICMP:
		if flags&flagFilterICMP != 0 || !b.has(h) || !b.on(h, t.Addr, now, draw, seed) {
			return prober.Timeout
		}
		return prober.Reply
	case prober.KindTCP:
		if b.svc != nil {
			for _, p := range b.svc.tcp[h] {
				if p == t.Port {
					return prober.Reply
				}
			}
			if _, ok := b.svc.tcp[h]; ok {
				return prober.Refused
			}
		}
		if b.has(h) {
			return prober.Refused
		}
	case prober.KindDNS:
		if b.svc != nil && b.svc.dns[h>>6]&(1<<(h&63)) != 0 {
			return prober.Reply
		}
	}
	return prober.Timeout
}

// on says whether host h answers now: with churn, each host is on or off
// for whole periods (drawn from a hash, so repeatable and free of state);
// without, each probe is drawn on its own.
func (b *block) on(h uint8, a netip.Addr, now time.Time, draw float64, seed uint64) bool {
	if b.avail >= 1 {
		return true
	}
	if b.churn <= 0 {
		return draw < float64(b.avail)
	}
	k, _, _ := key(a)
	period := uint64(now.UnixNano() / int64(b.churn))
	x := mix(seed ^ uint64(k)<<8 ^ uint64(h) ^ period*0x9e3779b97f4a7c15)
	return float64(x>>11)/(1<<53) < float64(b.avail)
}

// mix is splitmix64's finaliser: a cheap, well-spread hash.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
