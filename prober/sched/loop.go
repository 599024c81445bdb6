package sched

import (
	"context"
	"sort"
	"time"

	"github.com/cutoffnet/cutoff/prober"
)

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
