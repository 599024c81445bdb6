package sched

import (
	"context"
	"errors"
	"time"

	"github.com/cutoffnet/cutoff/prober"
)

// visit is one visit of one unit, alive while its probes are in flight.
type visit struct {
	gen     uint32 // bumped when the visit is recycled
	u       int32
	why     Why
	round   int64
	start   time.Time
	prior   float64
	mode    uint8
	explore bool // probe E(b) in random order, and learn A(b) from it
	n       int  // slots used
	pending int  // probes whose result has not come back
	waves   int  // follow-up waves sent
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
	v.explore = v.mode == modeJudge && why == Regular && s.rng.Float64() < exploreShare
	// Extra visits sample the hosts, to time a change sharply; the
	// operator's services are asked on the other visits.
	s.sendWave(ctx, v, n, why != Extra)
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
// preferring them could keep a recovered unit looking dark. An exploring
// visit too, so that it samples E(b) as a whole. The slice is scratch,
// valid until the next call.
func (s *Scheduler) candidates(v *visit, k int) []cand {
	useHistory := v.mode != modeRecover && !v.explore
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
	s.learn(v, st)
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

// learn updates A(b) of the visited unit's blocks, as decide.go
// describes: the ICMP probes of exploring visits count once a visit
// finds the unit up (at once if this one did); a verdict of down, or a
// visit to a unit believed down (its hosts may still be coming back) or
// unmeasurable, drops them. The unit's A, which sizes its recovery
// probes, follows its blocks'.
func (s *Scheduler) learn(v *visit, st State) {
	u := &s.units[v.u]
	blocks := s.blocks[u.block0 : u.block0+int32(u.nblocks)]
	if v.mode != modeJudge || (st != Up && st != Uncertain) {
		for i := range blocks {
			blocks[i].pend = 0
		}
		return
	}
	if v.explore {
		for _, sl := range v.slots[:v.n] {
			if sl.blk >= 0 && sl.done && sl.counts {
				s.blocks[sl.blk].pend = s.blocks[sl.blk].pend.plus(sl.reached)
			}
		}
	}
	if st != Up {
		return
	}
	changed := false
	for i := range blocks {
		b := &blocks[i]
		if b.pend == 0 {
			continue
		}
		b.learn = b.learn.add(b.pend.counts())
		b.avail = b.learn.avail()
		b.pend = 0
		changed = true
	}
	if changed {
		u.avail = unitAvail(blocks)
	}
}

// unitAvail is the A of a unit of these blocks: their A(b) weighted by
// |E(b)|; 0.5 if none has ICMP addresses.
func unitAvail(blocks []block) float32 {
	var e, sum float64
	for i := range blocks {
		n := float64(blocks[i].ever.count())
		e += n
		sum += n * float64(blocks[i].avail)
	}
	if e == 0 {
		return 0.5
	}
	return float32(sum / e)
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
