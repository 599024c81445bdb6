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
// that answered last time are tried first); after a silent first probe,
// the rest sent in doubling waves rather than one by one; re-checks at a short
// interval after a change, visits to the changed unit's neighbours and its
// vantage's control targets, and backing-off recovery visits, so outages
// are timed to well under a round; extra visits for small countries within
// a probe budget; a per-block cap and a per-address minimum interval.
package sched

import (
	"context"
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

// visit is one visit of one unit, alive while its probes are in flight.
type visit struct {
	gen     uint32 // bumped when the visit is recycled
	u       int32
	why     Why
	round   int64
	start   time.Time
	prior   float64
	mode    uint8
	n       int // slots used
	pending int // probes whose result has not come back
	waves   int // follow-up waves sent
	slots   [MaxProbes]slot
}

const (
	modeJudge        uint8 = iota // up or uncertain before: one probe, then doubling waves
	modeRecover                   // down before: Trinocular's recovery probes at once
	modeUnmeasurable              // too sparse to judge: look for an answer only
)

type slot struct {
	blk     int32 // index in s.blocks, or -1 for a service
	svc     int32 // index in s.svcs, or -1
	host    uint8
	kind    prober.Kind
	a       float32
	done    bool
	reached bool
	proof   bool
	counts  bool // the outcome is evidence (not a local Error)
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
// keeps its per-address history (for the addresses still in E(b)), and
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
		if j, ok := blocks[b.base]; ok && old.blocks[j].bits == b.bits {
			for w := range b.hot {
				b.hot[w] = old.blocks[j].hot[w] & b.ever[w]
			}
		}
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
	Availability   float64
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
			Services: int(u.nsvc), Availability: float64(u.avail),
		}
		for _, b := range s.blocks[u.block0 : u.block0+int32(u.nblocks)] {
			x.Addresses += b.ever.count()
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

// phase is when in the round unit i is visited, as an offset: units take
// evenly spaced slots in their shuffled order, each at a pseudo-random
// point of its slot, so visits are spread evenly and never in a burst.
func (s *Scheduler) phase(i int, n int) int64 {
	j := float64(mix(s.seed^uint64(i)*0x9e3779b97f4a7c15)>>11) / (1 << 53)
	return int64((float64(i) + j) / float64(n) * float64(s.cfg.Round))
}

func (s *Scheduler) regularAt(r int64, i int) int64 {
	return s.base + r*int64(s.cfg.Round) + s.phase(i, len(s.units))
}

func (s *Scheduler) controlAt(r int64, j int) int64 {
	return s.base + r*int64(s.cfg.Round) + int64((float64(j)+0.5)/float64(len(s.ctrls))*float64(s.cfg.Round))
}

// RoundOf is the round a time falls in: rounds are counted from the Unix
// epoch so that every vantage and every restart agrees on them.
func (s *Scheduler) RoundOf(t time.Time) int64 {
	return floorDiv(t.UnixNano(), int64(s.cfg.Round))
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// start positions the round cursor at now: the next regular visit is the
// first whose phase in the current round has not passed.
func (s *Scheduler) startAt(now int64, once bool) {
	s.started, s.once = true, once
	defer func() {
		for i := range s.units {
			if s.units[i].perRound > 1 {
				s.schedule(int32(i), 0, 0) // forget any earlier plan
				at, why := s.nextSlot(int32(i), now-1)
				s.units[i].next = 0
				s.schedule(int32(i), at, why)
			}
		}
	}()
	if once {
		s.base, s.r = now, 0
		s.pos, s.ctrlR, s.ctrlPos = 0, 0, 0
		s.onceEnd = now + int64(s.cfg.Round)
		return
	}
	s.base = 0
	s.r = floorDiv(now, int64(s.cfg.Round))
	n := len(s.units)
	s.pos = sort.Search(n, func(i int) bool { return s.regularAt(s.r, i) >= now })
	if s.pos == n {
		s.r, s.pos = s.r+1, 0
	}
	s.ctrlR = floorDiv(now, int64(s.cfg.Round))
	s.ctrlPos = sort.Search(len(s.ctrls), func(j int) bool { return s.controlAt(s.ctrlR, j) >= now })
	if s.ctrlPos == len(s.ctrls) {
		s.ctrlR, s.ctrlPos = s.ctrlR+1, 0
	}
}

// Step does everything due now: it hands completed probes to the sink,
// continues or ends their visits, and starts the visits that are due. It
// returns when it next has work, or the zero time when it has none planned
// (RunOnce's round is over). The first Step positions the round at the
// current time. Step is exported for simulations that drive virtual time
// (simnet.Run); Run and RunOnce call it themselves.
func (s *Scheduler) Step(ctx context.Context) time.Time {
	if !s.started {
		s.startAt(s.cfg.Now().UnixNano(), false)
	}
	for {
		s.drain(ctx)
		now := s.cfg.Now().UnixNano()
		if s.stopping || ctx.Err() != nil {
			return time.Time{}
		}
		next, what := s.nextDue()
		if what == dueNone || next > now {
			if s.once && what == dueNone && s.inflight == 0 {
				return time.Time{}
			}
			if what == dueNone {
				// Only results in flight: they wake Run.
				return time.Unix(0, now+int64(s.cfg.Round))
			}
			return time.Unix(0, next)
		}
		switch what {
		case dueRegular:
			i := s.pos
			s.pos++
			if s.pos == len(s.units) {
				s.pos = 0
				s.r++
			}
			if s.units[i].perRound > 1 {
				continue // on its country's schedule instead
			}
			s.stats.lag.Store(now - next)
			s.visit(ctx, int32(i), Regular, now)
		case dueControl:
			j := s.ctrlPos
			s.ctrlPos++
			if s.ctrlPos == len(s.ctrls) {
				s.ctrlPos = 0
				s.ctrlR++
			}
			s.probeControl(ctx, j, now)
		case dueExtra:
			e := s.ex.pop()
			u := &s.units[e.u]
			if u.next != e.at {
				continue // superseded
			}
			u.next = 0
			s.visit(ctx, e.u, u.why, now)
		}
	}
}

type due uint8

const (
	dueNone due = iota
	dueRegular
	dueControl
	dueExtra
)

func (s *Scheduler) nextDue() (int64, due) {
	best, what := int64(0), dueNone
	consider := func(t int64, w due) {
		if what == dueNone || t < best {
			best, what = t, w
		}
	}
	if len(s.units) > 0 && !(s.once && s.r > 0) {
		consider(s.regularAt(s.r, s.pos), dueRegular)
	}
	if len(s.ctrls) > 0 && !(s.once && s.ctrlR > 0) {
		consider(s.controlAt(s.ctrlR, s.ctrlPos), dueControl)
	}
	for len(s.ex) > 0 {
		e := s.ex[0]
		if s.units[e.u].next != e.at {
			s.ex.pop() // superseded
			continue
		}
		if s.once && e.at >= s.onceEnd && s.units[e.u].why != Regular {
			// RunOnce ends with its round; a regular visit that had to
			// wait still happens.
			s.ex.pop()
			s.units[e.u].next = 0
			continue
		}
		consider(e.at, dueExtra)
		break
	}
	return best, what
}

// Run probes round after round until ctx ends, then waits (at most two
// timeouts) for the results still in flight, hands them and the verdicts
// of the visits they finish to the sink, and returns.
func (s *Scheduler) Run(ctx context.Context) error {
	s.startAt(s.cfg.Now().UnixNano(), false)
	return s.loop(ctx)
}

// RunOnce probes one round starting now (every unit once, at phases
// spread over one round length; control targets once) and returns when
// the round's visits, and the re-checks they led to within it, are over.
// It returns ctx's error if ctx ended first.
func (s *Scheduler) RunOnce(ctx context.Context) error {
	s.startAt(s.cfg.Now().UnixNano(), true)
	if err := s.loop(ctx); err != nil {
		return err
	}
	return ctx.Err()
}

func (s *Scheduler) loop(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := s.Step(ctx)
		if ctx.Err() != nil {
			break
		}
		if next.IsZero() {
			if s.once {
				return nil
			}
			next = s.cfg.Now().Add(s.cfg.Round)
		}
		d := next.Sub(s.cfg.Now())
		if d <= 0 {
			continue
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
		case <-timer.C:
		case <-s.wake:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
	s.shutdown(ctx)
	return nil
}

// shutdown stops new probes and collects the results in flight.
func (s *Scheduler) shutdown(ctx context.Context) {
	s.stopping = true
	grace := time.NewTimer(2*s.cfg.Timeout + time.Second)
	defer grace.Stop()
	for s.drain(ctx); s.inflight > 0; s.drain(ctx) {
		select {
		case <-s.wake:
		case <-grace.C:
			s.cfg.Log.Warn("scheduler stopped with probes still in flight; their results are lost", "probes", s.inflight)
			s.mu.Lock()
			s.closed = true
			s.mu.Unlock()
			s.stats.lost.Add(int64(s.inflight))
			return
		}
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// complete is every probe's done callback: it may run on any goroutine,
// inside Probe or later, and never blocks.
func (s *Scheduler) complete(c completion) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.stats.lost.Add(1)
		return
	}
	s.queue = append(s.queue, c)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// drain handles the completions that arrived.
func (s *Scheduler) drain(ctx context.Context) {
	for {
		s.mu.Lock()
		q := s.queue
		s.queue = s.spare[:0]
		s.mu.Unlock()
		if len(q) == 0 {
			s.spare = q
			return
		}
		for i := range q {
			s.handle(ctx, q[i])
			q[i] = completion{}
		}
		s.spare = q
	}
}

func (s *Scheduler) handle(ctx context.Context, c completion) {
	if c.v == nil {
		s.inflight--
		s.stats.inflight.Add(-1)
		s.stats.results.Add(1)
		s.sink.Result(Result{Result: c.r, Round: s.RoundOf(c.r.Sent), Control: true})
		return
	}
	v := c.v
	sl := &v.slots[c.i]
	if c.gen != v.gen || sl.done {
		s.cfg.Log.Error("probe engine reported a result twice; the second is ignored", "target", c.r.Target.String())
		return
	}
	sl.done = true
	s.inflight--
	s.stats.inflight.Add(-1)
	v.pending--
	sl.reached, sl.proof, sl.counts = evidence(c.r)
	s.stats.results.Add(1)
	u := &s.units[v.u]
	s.sink.Result(Result{Result: c.r, Round: v.round, Unit: s.blocks[u.block0].prefix()})
	if v.pending == 0 {
		s.advance(ctx, v)
	}
}

// evidence reads a result: whether the target was reached, whether that
// proves its block reachable on its own, and whether the result is
// evidence at all (a local error is not).
func evidence(r prober.Result) (reached, proof, counts bool) {
	switch r.Outcome {
	case prober.Reply, prober.Refused:
		return true, r.Target.Kind != prober.KindICMP, true
	case prober.Unreachable:
		// An error from the target itself (a DNS server's port
		// unreachable) shows the host is there; one from a router on the
		// way shows it is not reachable.
		if r.Responder.IsValid() && r.Responder == r.Target.Addr {
			return true, true, true
		}
		return false, false, true
	case prober.Timeout:
		return false, false, true
	}
	return false, false, false
}

// visit starts a visit of unit i if it may be visited now.
func (s *Scheduler) visit(ctx context.Context, i int32, why Why, now int64) {
	u := &s.units[i]
	if u.flags&unitInFlight != 0 {
		u.flags |= unitDeferred
		s.stats.deferred.Add(1)
		return
	}
	if earliest := u.lastSent + int64(s.cfg.MinInterval); u.lastSent != 0 && now < earliest {
		s.stats.deferred.Add(1)
		s.schedule(i, earliest, why)
		return
	}
	// Refill the per-block bucket for the time since its last probe.
	rate := s.cfg.BlockCap * float64(u.nblocks) / float64(time.Hour) // per ns
	if u.lastSent != 0 {
		u.tokens = min(capacity(u), u.tokens+float32(float64(now-u.lastSent)*rate))
	}
	if u.tokens < 1 {
		s.stats.capped.Add(1)
		if rate > 0 {
			s.schedule(i, now+int64((1-float64(u.tokens))/rate)+1, why)
		}
		return
	}

	v := s.newVisit()
	v.u, v.why = i, why
	v.start = time.Unix(0, now)
	v.round = s.RoundOf(v.start)
	v.prior = float64(u.belief)
	switch {
	case u.static&unitMeasurable == 0:
		v.mode = modeUnmeasurable
	case u.belief < downBelow:
		v.mode = modeRecover
	default:
		v.mode = modeJudge
	}
	n := 1
	if v.mode == modeRecover {
		n = recoveryProbes(float64(u.avail))
	}
	s.sendWave(ctx, v, n, true)
	if v.n == 0 {
		// Nothing could be sent (the engines refused every target, or
		// the run is ending): no visit took place, so no verdict.
		s.release(v)
		return
	}
	u.flags |= unitInFlight
	s.stats.visits[why].Add(1)
}

// advance continues or ends a visit whose probes have all come back.
func (s *Scheduler) advance(ctx context.Context, v *visit) {
	u := &s.units[v.u]
	os := make([]obs, 0, MaxProbes)
	for _, sl := range v.slots[:v.n] {
		if sl.counts {
			os = append(os, obs{a: float64(sl.a), reached: sl.reached, proof: sl.proof})
		}
	}
	if v.mode == modeUnmeasurable {
		for i, o := range os {
			if o.reached {
				s.finish(ctx, v, beliefMax, Up, i+1)
				return
			}
		}
		want := recoveryProbes(float64(u.avail))
		if v.n < want && !s.stopping && ctx.Err() == nil {
			before := v.n
			s.sendWave(ctx, v, want-v.n, false)
			if v.n > before {
				if v.pending == 0 {
					s.advance(ctx, v)
				}
				return
			}
		}
		s.finish(ctx, v, 0, Unmeasurable, len(os))
		return
	}
	b, st, used := judge(v.prior, os)
	if st != Uncertain || s.stopping || ctx.Err() != nil || v.n >= MaxProbes {
		s.finish(ctx, v, b, st, used)
		return
	}
	// Undecided: the next, larger wave.
	cs := s.candidates(v, MaxProbes-v.n)
	var buf [MaxProbes]float64
	as := buf[:len(cs)]
	for i, c := range cs {
		as[i] = float64(c.a)
	}
	v.waves++
	n := waveSize(b, as, MaxProbes-v.n, v.waves)
	before := v.n
	if n > 0 {
		s.sendChosen(ctx, v, cs[:n])
	}
	if v.n == before {
		s.finish(ctx, v, b, st, used)
		return
	}
	if v.pending == 0 {
		s.advance(ctx, v)
	}
}

// cand is an address (or service) a visit may probe.
type cand struct {
	blk  int32
	svc  int32
	host uint8
	hot  bool
	a    float32
}

// candidates lists up to k targets of v's unit not yet probed in v: those
// that answered last time first, each group in random order (Trinocular
// probes in random order; trying the recently responsive first makes an
// up verdict cheaper and a down verdict rest on addresses that were
// alive). A unit believed down is probed in plain random order: its
// history stopped being updated when it went down, and the hosts that
// answer after an outage need not be the ones that did before, so
// preferring them could keep a recovered unit looking dark. The slice is
// scratch, valid until the next call.
func (s *Scheduler) candidates(v *visit, k int) []cand {
	useHistory := v.mode != modeRecover
	u := &s.units[v.u]
	cs := s.cand[:0]
	used := func(blk int32, svc int32, h uint8) bool {
		for _, sl := range v.slots[:v.n] {
			if sl.blk == blk && sl.svc == svc && (svc >= 0 || sl.host == h) {
				return true
			}
		}
		return false
	}
	hot := 0
	add := func(c cand) {
		cs = append(cs, c)
		if c.hot && useHistory {
			last := len(cs) - 1
			cs[hot], cs[last] = cs[last], cs[hot]
			hot++
		}
	}
	for bi := u.block0; bi < u.block0+int32(u.nblocks); bi++ {
		b := &s.blocks[bi]
		b.ever.each(func(h uint8) {
			if v.n > 0 && used(bi, -1, h) {
				return
			}
			add(cand{blk: bi, svc: -1, host: h, hot: b.hot.has(h), a: b.avail})
		})
	}
	for si := u.svc0; si < u.svc0+int32(u.nsvc); si++ {
		if v.n > 0 && used(-1, si, 0) {
			continue
		}
		sv := &s.svcs[si]
		add(cand{blk: -1, svc: si, hot: sv.hot, a: sv.avail})
	}
	s.cand = cs
	// Partial Fisher–Yates within each group, only as far as needed.
	take := min(k, len(cs))
	for i := 0; i < take; i++ {
		lo, hi := i, len(cs)
		if i < hot {
			hi = hot
		}
		j := lo + s.rng.IntN(hi-lo)
		cs[i], cs[j] = cs[j], cs[i]
	}
	return cs[:take]
}

// sendWave sends n probes chosen from the unit's candidates. A visit's
// first wave also probes the operator's service targets, at the front:
// their answer proves the block reachable outright, so a network that
// filters ICMP but serves TCP is judged up by every visit, not only by
// the ones whose random choice happens to include a service.
func (s *Scheduler) sendWave(ctx context.Context, v *visit, n int, services bool) {
	u := &s.units[v.u]
	budget := min(MaxProbes-v.n, int(u.tokens))
	if services {
		var ms []cand
		for si := u.svc0; si < u.svc0+int32(u.nsvc) && len(ms) < budget-1; si++ {
			if sv := &s.svcs[si]; sv.manual {
				ms = append(ms, cand{blk: -1, svc: si, hot: sv.hot, a: sv.avail})
			}
		}
		s.sendChosen(ctx, v, ms)
		budget = min(MaxProbes-v.n, int(u.tokens))
	}
	n = min(n, budget)
	if n <= 0 {
		return
	}
	s.sendChosen(ctx, v, s.candidates(v, n))
}

// sendChosen sends one probe per candidate. Slots are filled before any
// Probe call returns, so a result delivered inside Probe finds its slot.
func (s *Scheduler) sendChosen(ctx context.Context, v *visit, cs []cand) {
	u := &s.units[v.u]
	for _, c := range cs {
		if v.n >= MaxProbes || u.tokens < 1 || s.stopping || ctx.Err() != nil {
			return
		}
		var t prober.Target
		sl := slot{blk: c.blk, svc: c.svc, host: c.host, a: c.a}
		if c.svc >= 0 {
			t = s.svcs[c.svc].t
		} else {
			t = prober.Target{Kind: prober.KindICMP, Addr: s.blocks[c.blk].addr(c.host)}
		}
		sl.kind = t.Kind
		p := s.probers[t.Kind]
		if p == nil {
			continue
		}
		i := v.n
		v.slots[i] = sl
		v.n++
		v.pending++
		s.inflight++
		s.stats.inflight.Add(1)
		gen := v.gen
		err := p.Probe(ctx, t, func(r prober.Result) { s.complete(completion{v: v, gen: gen, i: i, r: r}) })
		if err != nil {
			// Not sent: the slot is taken back. Nothing can have
			// completed it, since done is never called on error.
			v.n--
			v.pending--
			s.inflight--
			s.stats.inflight.Add(-1)
			s.refused(ctx, t, err)
			if errors.Is(err, prober.ErrRefused) {
				continue
			}
			return
		}
		s.stats.sent.Add(1)
		u.tokens--
		u.lastSent = s.cfg.Now().UnixNano()
	}
}

// finish ends a visit: it records the verdict, updates the unit's belief
// and history, and plans its next out-of-round visit.
func (s *Scheduler) finish(ctx context.Context, v *visit, b float64, st State, used int) {
	u := &s.units[v.u]
	now := s.cfg.Now().UnixNano()
	vd := Verdict{
		Unit: s.blocks[u.block0].prefix(), Blocks: s.unitBlocks(u),
		Round: v.round, Why: v.why, Start: v.start, Time: time.Unix(0, now),
		Belief: b, State: st, Probes: v.n, Used: used,
	}
	for _, sl := range v.slots[:v.n] {
		if sl.reached {
			vd.Replies++
			vd.Evidence.Add(sl.kind)
		}
	}
	if st != Unmeasurable && v.n > 0 {
		u.belief = float32(b)
	}
	if st == Up {
		// History is kept only from visits that found the unit up: a
		// silent address of a dark block says nothing about the address.
		for _, sl := range v.slots[:v.n] {
			if !sl.done || !sl.counts {
				continue
			}
			if sl.svc >= 0 {
				s.svcs[sl.svc].hot = sl.reached
			} else if sl.reached {
				s.blocks[sl.blk].hot.set(sl.host)
			} else {
				s.blocks[sl.blk].hot.clear(sl.host)
			}
		}
	}
	s.stats.verdicts.Add(1)
	s.sink.Verdict(vd)

	u.flags &^= unitInFlight
	wasConfirmed := u.track.confirmed
	nt, recheck, changed := follow(u.track, st, s.cfg.MaxRechecks)
	u.track = nt
	if nt.confirmed != wasConfirmed {
		u.backoff = 0
	}
	ui := v.u
	s.release(v)

	if !s.stopping && ctx.Err() == nil {
		s.planNext(ui, now, recheck)
		if changed {
			s.nudge(ctx, ui, now)
		}
	}
}

// planNext schedules the unit's next out-of-round visit, if any: a
// re-check, a recovery visit while down, an extra visit of a small
// country, or a regular visit that fell due while this one was running.
func (s *Scheduler) planNext(i int32, now int64, recheck bool) {
	u := &s.units[i]
	at, why := int64(0), Why(0)
	consider := func(t int64, w Why) {
		if why == 0 || t < at {
			at, why = t, w
		}
	}
	interval := s.cfg.Round / time.Duration(u.perRound)
	if recheck {
		consider(now+int64(s.cfg.Recheck), Recheck)
	} else if u.track.confirmed == Down && u.track.last == Down {
		if d, ok := downBackoff(s.cfg.Recheck, interval, int(u.backoff)+1); ok {
			consider(now+int64(d), Recovery)
			u.backoff++
		}
	}
	if u.perRound > 1 && !s.once {
		consider(s.nextSlot(i, now))
	}
	if u.flags&unitDeferred != 0 {
		u.flags &^= unitDeferred
		consider(u.lastSent+int64(s.cfg.MinInterval), Regular)
	}
	if why != 0 {
		s.schedule(i, at, why)
	}
}

// nextSlot is the first visit after the given time of a unit on its
// country's interleaved schedule: the country's n units take turns, one
// every Round/(n·perRound), from a pseudo-random phase of the country's;
// every perRound-th visit of a unit counts as its regular one.
func (s *Scheduler) nextSlot(i int32, after int64) (int64, Why) {
	u := &s.units[i]
	n := int64(s.slotted[u.country])
	p := int64(u.perRound)
	period := int64(s.cfg.Round) / p
	step := period / n
	phase := int64(float64(mix(s.seed^0x51ab^uint64(u.country)*0x9e3779b97f4a7c15)>>11) / (1 << 53) * float64(period))
	off := s.base + phase + int64(u.slot)*step
	j := floorDiv(after-off, period) + 1
	why := Extra
	if (j%p+p)%p == 0 {
		why = Regular
	}
	return off + j*period, why
}

// schedule sets unit i's out-of-round visit to at, unless one is already
// due earlier.
func (s *Scheduler) schedule(i int32, at int64, why Why) {
	u := &s.units[i]
	if u.next != 0 && u.next <= at {
		return
	}
	u.next, u.why = at, why
	s.ex.push(exEntry{at: at, u: i})
}

// nudge brings forward a visit to the units next to i in address order
// within its country (they likely share its fate), spread over the
// re-check interval, and probes the control targets if they were not
// probed within it, so every change comes with fresh evidence about the
// vantage's own connectivity.
func (s *Scheduler) nudge(ctx context.Context, i int32, now int64) {
	u := &s.units[i]
	if s.cfg.Nudge > 0 {
		sp := s.countries[u.country]
		lo := max(sp.lo, u.addrPos-int32(s.cfg.Nudge/2))
		hi := min(sp.hi, lo+int32(s.cfg.Nudge)+1)
		lo = max(sp.lo, hi-int32(s.cfg.Nudge)-1)
		k, n := 0, int(hi-lo)-1
		for p := lo; p < hi; p++ {
			j := s.byAddr[p]
			if j == i {
				continue
			}
			k++
			at := now + int64(s.cfg.Recheck)*int64(k)/int64(n+1)
			if s.once && at >= s.onceEnd {
				continue
			}
			s.schedule(j, at, Nudge)
		}
	}
	if len(s.ctrls) > 0 && (s.ctrlNudge == 0 || now-s.ctrlNudge >= int64(s.cfg.Recheck)) {
		s.ctrlNudge = now
		for j := range s.ctrls {
			s.probeControl(ctx, j, now)
		}
	}
}

func (s *Scheduler) probeControl(ctx context.Context, j int, now int64) {
	c := &s.ctrls[j]
	if c.lastSent != 0 && now-c.lastSent < int64(s.cfg.MinInterval) {
		return
	}
	p := s.probers[c.t.Kind]
	s.inflight++
	s.stats.inflight.Add(1)
	if err := p.Probe(ctx, c.t, func(r prober.Result) { s.complete(completion{i: j, r: r}) }); err != nil {
		s.inflight--
		s.stats.inflight.Add(-1)
		s.refused(ctx, c.t, err)
		return
	}
	s.stats.sent.Add(1)
	c.lastSent = now
}

func (s *Scheduler) newVisit() *visit {
	if n := len(s.free); n > 0 {
		v := s.free[n-1]
		s.free = s.free[:n-1]
		return v
	}
	return new(visit)
}

func (s *Scheduler) release(v *visit) {
	*v = visit{gen: v.gen + 1}
	s.free = append(s.free, v)
}

// refused counts a probe an engine would not send, and logs the first
// and then every power of two of them: a plan the policy refuses would
// otherwise fill the log every round.
func (s *Scheduler) refused(ctx context.Context, t prober.Target, err error) {
	n := s.stats.refused.Add(1)
	if ctx.Err() == nil && n&(n-1) == 0 {
		s.cfg.Log.Warn("probe not sent", "target", t.String(), "err", err, "refused_so_far", n)
	}
}

// mix is splitmix64's finaliser: a cheap, well-spread hash.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// exEntry is an out-of-round visit: unit u at time at.
type exEntry struct {
	at int64
	u  int32
}

// exHeap is a min-heap of out-of-round visits. An entry whose time no
// longer matches its unit's next visit is stale and skipped.
type exHeap []exEntry

func (h *exHeap) push(e exEntry) {
	*h = append(*h, e)
	x := *h
	i := len(x) - 1
	for i > 0 {
		p := (i - 1) / 2
		if x[p].at <= x[i].at {
			break
		}
		x[p], x[i] = x[i], x[p]
		i = p
	}
}

func (h *exHeap) pop() exEntry {
	x := *h
	top := x[0]
	last := len(x) - 1
	x[0] = x[last]
	x = x[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(x) && x[l].at < x[m].at {
			m = l
		}
		if r < len(x) && x[r].at < x[m].at {
			m = r
		}
		if m == i {
			break
		}
		x[i], x[m] = x[m], x[i]
		i = m
	}
	*h = x
	return top
}
