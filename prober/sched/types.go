package sched

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/cutoffnet/cutoff/prober"
)

// State is a unit's judged state.
type State uint8

const (
	// Unknown: no visit has judged the unit yet.
	Unknown State = iota
	// Up: the unit answered; belief above 0.9.
	Up
	// Down: no answer and belief below 0.1.
	Down
	// Uncertain: the visit's probes could not decide (belief between the
	// thresholds, or no probe left); the unit is re-checked soon.
	Uncertain
	// Unmeasurable: the unit has too few responsive addresses to be
	// judged down even after pooling; only an answer (then Up) says
	// anything about it.
	Unmeasurable
)

func (s State) String() string {
	switch s {
	case Unknown:
		return "unknown"
	case Up:
		return "up"
	case Down:
		return "down"
	case Uncertain:
		return "uncertain"
	case Unmeasurable:
		return "unmeasurable"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Kinds is a set of probe kinds.
type Kinds uint8

// Add puts k in the set.
func (ks *Kinds) Add(k prober.Kind) { *ks |= 1 << k }

// Has reports whether k is in the set.
func (ks Kinds) Has(k prober.Kind) bool { return ks&(1<<k) != 0 }

func (ks Kinds) String() string {
	var parts []string
	for _, k := range []prober.Kind{prober.KindICMP, prober.KindTCP, prober.KindDNS} {
		if ks.Has(k) {
			parts = append(parts, k.String())
		}
	}
	return strings.Join(parts, ",")
}

// Why says what made a visit happen.
type Why uint8

const (
	// Regular: the unit's visit of the round.
	Regular Why = iota + 1
	// Extra: one of the additional visits a unit of a small country gets
	// each round.
	Extra
	// Recheck: a re-check after a change of state or an uncertain verdict.
	Recheck
	// Nudge: a neighbouring unit of the same country changed state.
	Nudge
	// Recovery: a unit confirmed down, visited with backing-off interval
	// so the end of an outage is known early.
	Recovery
)

func (w Why) String() string {
	switch w {
	case Regular:
		return "regular"
	case Extra:
		return "extra"
	case Recheck:
		return "recheck"
	case Nudge:
		return "nudge"
	case Recovery:
		return "recovery"
	}
	return fmt.Sprintf("why(%d)", uint8(w))
}

// Result is one probe's result as the scheduler hands it on.
type Result struct {
	prober.Result
	// Round is the round the probe belongs to: the time it was sent
	// divided by the round length, counted from the Unix epoch, so that
	// rounds line up across vantages and restarts.
	Round int64
	// Unit is the judgement unit the probe was evidence for (its first
	// block); the zero Prefix for a control target.
	Unit    netip.Prefix
	Control bool
}

// Verdict is one visit's judgement of one unit.
type Verdict struct {
	// Unit names the unit by its first block; Blocks lists all its blocks
	// (more than one when sparse blocks were pooled).
	Unit   netip.Prefix
	Blocks []netip.Prefix
	Round  int64
	Why    Why
	// Start is when the visit's first probe was sent; Time when the
	// verdict was reached.
	Start, Time time.Time
	// Belief is the belief that the unit is up after the visit (for
	// Unmeasurable units, 0.99 after an answer and 0 otherwise).
	Belief float64
	State  State
	// Probes were sent and Replies answered (Reply, Refused, or an error
	// from the target itself); Used is how many probes the decision rests
	// on. Evidence lists the kinds that answered.
	Probes, Replies, Used int
	Evidence              Kinds
}

// Sink receives the scheduler's output. Both methods are called from the
// scheduler's own goroutine, one call at a time, so they must return
// quickly (buffer, don't write to a database inline). Every result of a
// visit is delivered before its verdict.
type Sink interface {
	Result(Result)
	Verdict(Verdict)
}

// Config tunes a Scheduler. Its zero value works: Trinocular's 11-minute
// round, 5 s timeouts, 30 s re-checks and the politeness limits below.
type Config struct {
	// Round is how often every unit is visited (default 11 min, as
	// Trinocular; as short as a second for tests).
	Round time.Duration
	// Timeout is the probe engines' timeout (default 5 s). The scheduler
	// does not time probes out itself (the engines do); it uses this to
	// bound how long Run waits for results in flight when it stops.
	Timeout time.Duration
	// Recheck is the interval of re-checks after a unit changes state or
	// turns uncertain (default 30 s, at most a quarter round).
	Recheck time.Duration
	// MaxRechecks bounds the re-checks after one confirmed verdict
	// (default 6).
	MaxRechecks int
	// MinInterval is the shortest time between two probes to one address
	// (default 10 s, at most Recheck/2).
	MinInterval time.Duration
	// Sample is how often the scheduler tries to observe each country:
	// the units of a country with fewer units than Round/Sample get
	// extra visits each round, within Budget (default 1 min; negative
	// turns extra visits off).
	Sample time.Duration
	// Budget is the average probes per /24 per hour that extra visits
	// may bring a unit to (default 18, under Trinocular's 20).
	Budget float64
	// BlockCap is a hard cap on probes per /24 per hour, whatever
	// happens (default 60, with a burst of two full visits).
	BlockCap float64
	// Nudge is how many neighbouring units of the same country are
	// visited early when a unit changes state (default 8; negative: none).
	Nudge int
	// MaxPool caps how many sparse blocks are pooled into one unit
	// (default 256).
	MaxPool int
	// Seed fixes the pseudo-random choices (visit phases, address order);
	// 0 picks one at random.
	Seed uint64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log gets operational messages; nil discards them.
	Log *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Round == 0 {
		c.Round = 11 * time.Minute
	}
	if c.Round < 0 {
		return c, fmt.Errorf("round %v is negative", c.Round)
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Recheck == 0 {
		c.Recheck = min(30*time.Second, c.Round/4)
	}
	if c.MinInterval == 0 {
		c.MinInterval = min(10*time.Second, c.Recheck/2)
	}
	if c.MaxRechecks == 0 {
		c.MaxRechecks = 6
	}
	if c.Sample == 0 {
		c.Sample = time.Minute
	}
	if c.Budget == 0 {
		c.Budget = 18
	}
	if c.BlockCap == 0 {
		c.BlockCap = 60
	}
	if c.Nudge == 0 {
		c.Nudge = 8
	}
	if c.MaxPool == 0 {
		c.MaxPool = 256
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.Timeout < 0:
		return c, fmt.Errorf("timeout %v is negative", c.Timeout)
	case c.Recheck <= 0 || c.Recheck > c.Round:
		return c, fmt.Errorf("recheck %v must be positive and at most the round (%v)", c.Recheck, c.Round)
	case c.MinInterval < 0 || c.MinInterval > c.Recheck:
		return c, fmt.Errorf("min interval %v must be between 0 and the recheck interval (%v)", c.MinInterval, c.Recheck)
	case c.MaxRechecks < 0:
		return c, fmt.Errorf("max rechecks %d is negative", c.MaxRechecks)
	case c.Budget < 0 || c.BlockCap < 0:
		return c, fmt.Errorf("budget %v and block cap %v must not be negative", c.Budget, c.BlockCap)
	case c.BlockCap < c.Budget:
		return c, fmt.Errorf("block cap %v is below the budget %v", c.BlockCap, c.Budget)
	}
	return c, nil
}
