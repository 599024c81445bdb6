// Package sched decides what a vantage probes each round and judges each
// unit up, down or uncertain.
//
// A Plan (store.Plan: blocks with their ever-responsive addresses E(b),
// availability A(b) and per-address history, service targets, control
// targets) enters through New; probes leave through the prober.Prober of
// each kind; every probe's Result and every visit's Verdict leave through
// a Sink.
//
// The model is Trinocular's (Quan, Heidemann and Pradkin, SIGCOMM 2013):
// every /24 is visited once a round at its own phase, a visit probes
// ever-responsive addresses and updates a Bayesian belief that the block
// is up until it decides, and a block believed down gets recovery probes.
// cutoff adds: sparse blocks of one network pooled into one unit; TCP and
// DNS answers as proof of reachability; per-address history (addresses
// that answered last time are tried first); A(b) learned from the visits
// that find the block up (half the regular visits sample E(b) in random
// order for it, see decide.go); after a silent first probe,
// the rest sent in doubling waves rather than one by one; re-checks at a
// short interval after a change, early visits to the changed unit's
// neighbours and a probe of the control targets, and backing-off
// recovery visits, so outages are timed to well under a round; extra
// visits, on one interleaved schedule, for the units of small countries,
// within a probe budget; a per-block cap and a per-address minimum
// interval.
//
// sched.go holds the state and its construction, loop.go the timeline
// (rounds, Run, Step, results coming back), visit.go one visit from its
// first probe to its verdict; the decision rules are pure functions in
// decide.go.
package sched

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/store"
)

// Scheduler probes a plan round after round. Run, RunOnce and Step drive
// it and must not be called concurrently; Stats may be called any time.
type Scheduler struct {
	cfg     Config
	probers [4]prober.Prober
	sink    Sink
	rng     *rand.Rand
	seed    uint64

	*layout
	ex exHeap // out-of-round visits

	// The round cursor: regular visits of round r are due at
	// base + r*Round + phase(i).
	base      int64
	r         int64
	pos       int
	ctrlR     int64
	ctrlPos   int
	started   bool
	once      bool  // one round only (RunOnce)
	onceEnd   int64 // RunOnce: out-of-round visits after this are dropped
	stopping  bool
	ctrlNudge int64 // when controls were last probed because of a change

	// Completions arrive from the engines' goroutines.
	mu     sync.Mutex
	queue  []completion
	spare  []completion // the other buffer: drain swaps them
	closed bool
	wake   chan struct{}

	inflight int // probes sent whose result has not been handled
	free     []*visit
	cand     []cand // scratch for choosing addresses

	stats stats
}

type completion struct {
	v   *visit // nil for a control target
	gen uint32 // v's generation when the probe was sent
	i   int    // slot, or control index
	r   prober.Result
}

// stats are counters readable from any goroutine.
type stats struct {
	sent, results, refused, lost, verdicts, capped, deferred atomic.Int64
	visits                                                   [6]atomic.Int64
	inflight                                                 atomic.Int64
	lag                                                      atomic.Int64
}

// Stats is a snapshot of the scheduler's counters.
type Stats struct {
	Units, Blocks, Unmeasurable, Services, Controls int
	// Sent probes; Results handed to the sink (equal to Sent once nothing
	// is in flight); Refused by an engine (not sent); Lost: results that
	// came after Run returned.
	Sent, Results, Refused, Lost int64
	Verdicts                     int64
	// Visits by reason (index: Why).
	Visits [6]int64
	// Capped visits were put off by the per-block cap; Deferred ones
	// waited for the unit's previous visit or the per-address interval.
	Capped, Deferred int64
	InFlight         int64
	// Lag is how late the last regular visit started.
	Lag time.Duration
}

// New builds a scheduler for plan. probers gives the engine for each kind;
// targets of a kind without one are left out. The scheduler keeps no
// reference to plan.
func New(plan *store.Plan, probers map[prober.Kind]prober.Prober, sink Sink, cfg Config) (*Scheduler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("scheduler config: %w", err)
	}
	if sink == nil {
		return nil, errors.New("scheduler needs a sink")
	}
	s := &Scheduler{cfg: cfg, sink: sink, wake: make(chan struct{}, 1)}
	for k, p := range probers {
		if k < prober.KindICMP || k > prober.KindDNS {
			return nil, fmt.Errorf("scheduler: unknown probe kind %v", k)
		}
		s.probers[k] = p
	}
	s.seed = cfg.Seed
	if s.seed == 0 {
		s.seed = rand.Uint64()
	}
	s.rng = rand.New(rand.NewPCG(s.seed, s.seed^0x5851f42d4c957f2d))
	l, err := build(plan, cfg, func(k prober.Kind) bool { return s.probers[k] != nil }, s.rng)
	if err != nil {
		return nil, err
	}
	s.layout = l
	if l.skipped > 0 {
		cfg.Log.Info("plan targets left out (IPv6, outside planned blocks, or no engine for their kind)", "targets", l.skipped)
	}
	return s, nil
}

// Carry takes over what old learned, so that a scheduler built from a
// refreshed plan does not start from scratch: each block both plans share
// keeps its per-address history (for the addresses still in E(b)) and,
// unless a new census changed its A(b) in the plan, its learned A(b); and
// each unit made of the same blocks keeps its belief, its recent verdicts
// and its probe budget. Call it after old's Run has returned and before
// s runs.
func (s *Scheduler) Carry(old *Scheduler) {
	blocks := make(map[uint32]int32, len(old.blocks))
	for i := range old.blocks {
		blocks[old.blocks[i].base] = int32(i)
	}
	for i := range s.blocks {
		b := &s.blocks[i]
		j, ok := blocks[b.base]
		if !ok || old.blocks[j].bits != b.bits {
			continue
		}
		ob := &old.blocks[j]
		for w := range b.hot {
			b.hot[w] = ob.hot[w] & b.ever[w]
		}
		if ob.plan == b.plan && ob.ever == b.ever {
			b.avail, b.learn, b.pend = ob.avail, ob.learn, ob.pend
		}
	}
	for i := range s.units {
		u := &s.units[i]
		u.avail = unitAvail(s.blocks[u.block0 : u.block0+int32(u.nblocks)])
	}
	for i := range s.units {
		u := &s.units[i]
		j, ok := blocks[s.blocks[u.block0].base]
		if !ok {
			continue
		}
		o := old.unitOf(j)
		if o == nil || o.nblocks != u.nblocks || o.block0 != j {
			continue
		}
		same := true
		for k := int32(1); k < int32(u.nblocks); k++ {
			if old.blocks[o.block0+k].base != s.blocks[u.block0+k].base {
				same = false
				break
			}
		}
		if !same {
			continue
		}
		u.belief, u.track, u.backoff = o.belief, o.track, o.backoff
		u.tokens, u.lastSent = min(o.tokens, capacity(u)), o.lastSent
	}
}

// unitOf finds the unit block i belongs to: units own contiguous runs of
// blocks in unit order, so a binary search over block0 finds it.
func (s *Scheduler) unitOf(i int32) *unit {
	k := sort.Search(len(s.units), func(k int) bool { return s.units[k].block0 > i }) - 1
	if k < 0 {
		return nil
	}
	return &s.units[k]
}

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() Stats {
	st := Stats{
		Units: len(s.units), Blocks: len(s.blocks), Services: len(s.svcs), Controls: len(s.ctrls),
		Sent: s.stats.sent.Load(), Results: s.stats.results.Load(), Refused: s.stats.refused.Load(),
		Lost: s.stats.lost.Load(), Verdicts: s.stats.verdicts.Load(), Capped: s.stats.capped.Load(),
		Deferred: s.stats.deferred.Load(), InFlight: s.stats.inflight.Load(),
		Lag: time.Duration(s.stats.lag.Load()),
	}
	for i := range st.Visits {
		st.Visits[i] = s.stats.visits[i].Load()
	}
	st.Unmeasurable = s.unmeasurable
	return st
}

// Unit describes one judgement unit.
type Unit struct {
	Key        netip.Prefix // its first block
	Blocks     []netip.Prefix
	Country    string
	Measurable bool
	// VisitsPerRound is 1, or more for units of small countries.
	VisitsPerRound int
	Addresses      int // ICMP addresses of E
	Services       int
	// Availability is the unit's A as the plan gave it (its blocks' A(b)
	// weighted by |E(b)|); the A its visits use is learned from then on.
	Availability float64
}

// Units lists the judgement units in address order, so a caller can
// record which blocks were pooled together and which are unmeasurable.
func (s *Scheduler) Units() []Unit {
	out := make([]Unit, 0, len(s.units))
	for _, i := range s.byAddr {
		u := &s.units[i]
		x := Unit{
			Key: s.blocks[u.block0].prefix(), Blocks: s.unitBlocks(u), Country: s.names[u.country],
			Measurable: u.static&unitMeasurable != 0, VisitsPerRound: int(u.perRound),
			Services: int(u.nsvc),
		}
		var sum float64
		for _, b := range s.blocks[u.block0 : u.block0+int32(u.nblocks)] {
			n := b.ever.count()
			x.Addresses += n
			sum += float64(n) * float64(b.plan)
		}
		x.Availability = 0.5
		if x.Addresses > 0 {
			x.Availability = sum / float64(x.Addresses)
		}
		out = append(out, x)
	}
	return out
}

func (s *Scheduler) unitBlocks(u *unit) []netip.Prefix {
	out := make([]netip.Prefix, u.nblocks)
	for i := range out {
		out[i] = s.blocks[int(u.block0)+i].prefix()
	}
	return out
}

// mix is splitmix64's finaliser: a cheap, well-spread hash.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
