package simnet

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// Clock is virtual time. Nothing happens until the test advances it;
// then the callbacks due by the new time run in time order, each seeing
// Now() equal to its own due time. A simulated day takes milliseconds,
// and a run is the same every time.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	events events
	seq    uint64
}

// NewClock starts virtual time at start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

// Now is the virtual time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc arranges for f to run when virtual time reaches Now()+d.
func (c *Clock) AfterFunc(d time.Duration, f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	heap.Push(&c.events, event{at: c.now.Add(max(d, 0)), seq: c.seq, f: f})
}

// Next reports when the earliest pending callback is due.
func (c *Clock) Next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.events) == 0 {
		return time.Time{}, false
	}
	return c.events[0].at, true
}

// Pending counts the callbacks not yet run.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.events)
}

// AdvanceTo moves virtual time to t, running every callback due by then
// in order (ties in the order they were scheduled). Callbacks may
// schedule more callbacks; those due by t run too. Time never goes back.
func (c *Clock) AdvanceTo(t time.Time) {
	for {
		c.mu.Lock()
		if len(c.events) == 0 || c.events[0].at.After(t) {
			if t.After(c.now) {
				c.now = t
			}
			c.mu.Unlock()
			return
		}
		e := heap.Pop(&c.events).(event)
		if e.at.After(c.now) {
			c.now = e.at
		}
		c.mu.Unlock()
		e.f()
	}
}

// Advance moves virtual time forward by d.
func (c *Clock) Advance(d time.Duration) { c.AdvanceTo(c.Now().Add(d)) }

type event struct {
	at  time.Time
	seq uint64
	f   func()
}

type events []event

func (e events) Len() int { return len(e) }
func (e events) Less(i, j int) bool {
	if e[i].at.Equal(e[j].at) {
		return e[i].seq < e[j].seq
	}
	return e[i].at.Before(e[j].at)
}
func (e events) Swap(i, j int) { e[i], e[j] = e[j], e[i] }
func (e *events) Push(x any)   { *e = append(*e, x.(event)) }
func (e *events) Pop() any {
	old := *e
	x := old[len(old)-1]
	old[len(old)-1] = event{}
	*e = old[:len(old)-1]
	return x
}

// Stepper is a state machine driven by the clock: Step does what is due
// now and says when it next has work (the zero time: nothing planned).
// prober/sched's Scheduler is one.
type Stepper interface {
	Step(ctx context.Context) time.Time
}

// Run drives s and the clock's callbacks together until virtual time
// reaches until: it alternates s.Step with advancing the clock to the
// earlier of s's next wake-up and the next callback. It panics if s keeps
// asking for work at the same instant a million times (a livelock in s).
func Run(ctx context.Context, c *Clock, s Stepper, until time.Time) {
	stuck := 0
	for ctx.Err() == nil {
		next := s.Step(ctx)
		t, ok := c.Next()
		if !next.IsZero() && (!ok || next.Before(t)) {
			t, ok = next, true
		}
		if !ok || t.After(until) {
			c.AdvanceTo(until)
			s.Step(ctx)
			return
		}
		if t.After(c.Now()) {
			stuck = 0
		} else if stuck++; stuck > 1_000_000 {
			panic("simnet: stepper makes no progress")
		}
		c.AdvanceTo(t)
	}
}
