package correlate

import (
	"sort"
	"time"
)

// State of a block, network, country or vantage over time.
type State uint8

const (
	Unknown State = iota
	Up
	Down
	Partial
)

func (s State) String() string {
	switch s {
	case Up:
		return "up"
	case Down:
		return "down"
	case Partial:
		return "partial"
	}
	return "unknown"
}

// A point is a change of state on a timeline. The state holds from T until
// the next point. [E, L] brackets when the change truly happened: E is the
// last evidence of the old state and L the first evidence of the new one,
// and T is their midpoint (kept strictly increasing along a track).
// Informative is false for changes that carry no timing evidence of their
// own: data going stale, or a vantage's evidence being set aside.
type point struct {
	T, E, L     int64 // microseconds since the Unix epoch
	State       State
	Informative bool
	// N is what the state rests on at T: vantages agreeing, for a block.
	N int
	// Counts at T, for networks and countries.
	Up, Down, Measurable int
}

// track is a timeline: points in increasing T.
type track []point

// at returns the state of the track at time t and the index of the point
// in force (-1 before the first point).
func (tr track) at(t int64) (State, int) {
	i := sort.Search(len(tr), func(i int) bool { return tr[i].T > t }) - 1
	if i < 0 {
		return Unknown, -1
	}
	return tr[i].State, i
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// Obs is one verdict of one vantage on one block.
type Obs struct {
	At   int64 // when the verdict was reached
	Sent int64 // when the visit's first probe left
	// State is Up or Down; uncertain and unmeasurable verdicts are not
	// evidence and are left out before this point.
	State State
}

// evidence returns the times this observation speaks for: an up verdict
// is evidence of up when its reply arrived (at most At); a down verdict
// is evidence of down from its first unanswered probe (Sent) to its last
// (no later than At minus the probe timeout).
func (o Obs) evidence(timeout int64) (first, last int64) {
	if o.State == Up {
		return o.At, o.At
	}
	last = o.At - timeout
	if last < o.Sent {
		last = o.Sent
	}
	return o.Sent, last
}

// vantageTrack turns one vantage's verdicts on one block (sorted by At)
// into a track. A state holds from the midpoint between the last evidence
// of the old state and the first of the new, until the next change or
// until the evidence is older than fresh (then the state is Unknown).
//
// Verdicts whose evidence falls inside one of the windows (sorted,
// disjoint) are set aside: the vantage was unhealthy then, so what it saw
// says nothing about the block, and the state is Unknown from the
// window's start until evidence after it.
func vantageTrack(obs []Obs, fresh, timeout int64, windows []window) track {
	var tr track
	var cur State = Unknown
	var lastEv int64 // last evidence time of the current state
	var lastAt int64 // last verdict time of the current state
	wi := 0
	for _, o := range obs {
		if o.State != Up && o.State != Down {
			continue
		}
		first, last := o.evidence(timeout)
		if cur != Unknown {
			// What was known ends when it goes stale before this verdict,
			// or when a window opens before this evidence.
			end := int64(open)
			if o.At > lastAt+fresh {
				end = lastAt + fresh
			}
			if wi < len(windows) && windows[wi].From <= first {
				end = min(end, windows[wi].From)
			}
			if end != open {
				tr = appendPoint(tr, point{T: end, E: end, L: end, State: Unknown})
				cur = Unknown
			}
		}
		for wi < len(windows) && windows[wi].To <= first {
			wi++
		}
		if wi < len(windows) && windows[wi].From <= first {
			continue // set aside
		}
		if o.State == cur {
			lastEv, lastAt = max(lastEv, last), o.At
			continue
		}
		p := point{State: o.State, L: first, Informative: true, N: 1}
		if cur == Unknown {
			// Nothing known before: the state is known from the verdict.
			p.E, p.L, p.T, p.Informative = o.At, o.At, o.At, false
		} else {
			p.E = lastEv
			if p.E > p.L {
				p.E, p.L = p.L, p.E
			}
			p.T = p.E + (p.L-p.E)/2
		}
		tr = appendPoint(tr, p)
		cur, lastEv, lastAt = o.State, last, o.At
	}
	if cur != Unknown {
		// The last state goes stale fresh after its last verdict, or when
		// a window opens, whichever comes first; the caller cuts tracks at
		// the data horizon.
		end := lastAt + fresh
		if wi < len(windows) && windows[wi].From < end {
			end = windows[wi].From
		}
		tr = appendPoint(tr, point{T: end, E: end, L: end, State: Unknown})
	}
	return tr
}

// appendPoint appends p, keeping T strictly increasing: a change whose
// midpoint falls at or before the previous change is placed just after it.
func appendPoint(tr track, p point) track {
	if n := len(tr); n > 0 {
		if p.T <= tr[n-1].T {
			p.T = tr[n-1].T + 1
		}
		if tr[n-1].State == p.State {
			return tr
		}
	}
	return append(tr, p)
}

// window is a half-open time range [From, To).
type window struct{ From, To int64 }

// cut ends a track at the data horizon: points after it are dropped, since
// they describe staleness that has not happened yet.
func cut(tr track, horizon int64) track {
	i := sort.Search(len(tr), func(i int) bool { return tr[i].T > horizon })
	return tr[:i]
}

// rule decides a combined state from the states of the members at one
// time. n is the number of members the state rests on, or -1 to take
// the deciding member's own count (a country's vantages are those of the
// block that decided its state).
type rule func(up, down, members int) (st State, n int)

// anyUp is the rule across vantages for one block: up if any healthy
// vantage reached it, down if every one with fresh evidence (at least one)
// did not, unknown otherwise. Thunderping's lesson: a vantage's fault must
// never be blamed on the target, so one answer anywhere means up.
func anyUp(up, down, _ int) (State, int) {
	switch {
	case up > 0:
		return Up, up
	case down > 0:
		return Down, down
	}
	return Unknown, 0
}

// Thresholds turn the share of measurable blocks that are up into a
// network's or country's state.
type Thresholds struct {
	Down, Up      float64 // share up at or below Down is down, at or above Up is up
	MinMeasurable int     // fewer measurable blocks than this is unknown
}

// DefaultThresholds are IODA-like: down at ≤10% up, up at ≥90%.
var DefaultThresholds = Thresholds{Down: 0.10, Up: 0.90, MinMeasurable: 1}

func (th Thresholds) rule() rule {
	return func(up, down, _ int) (State, int) {
		m := up + down
		if m < max(th.MinMeasurable, 1) {
			return Unknown, -1
		}
		share := float64(up) / float64(m)
		switch {
		case share <= th.Down:
			return Down, -1
		case share >= th.Up:
			return Up, -1
		}
		return Partial, -1
	}
}

// combine sweeps the members' tracks and returns the combined track under
// the rule. The bracket of a combined change is the intersection of the
// brackets of the members' own informative changes into the new state
// within lookback before it (when every member saw one event, such as a
// border cut, this is sharper than any one member); when they do not
// intersect, the bracket of the member whose change decided it.
func combine(members []track, r rule, lookback int64) track {
	type ev struct {
		t   int64
		mem int
		idx int
	}
	var evs []ev
	for m, tr := range members {
		for i := range tr {
			evs = append(evs, ev{tr[i].T, m, i})
		}
	}
	sort.Slice(evs, func(i, j int) bool {
		if evs[i].t != evs[j].t {
			return evs[i].t < evs[j].t
		}
		return evs[i].mem < evs[j].mem
	})
	cur := make([]State, len(members))
	var up, down int
	var out track
	var state State = Unknown
	started := false
	prevT := int64(-1 << 62)
	for i := 0; i < len(evs); {
		t := evs[i].t
		var decisive *point
		j := i
		for ; j < len(evs) && evs[j].t == t; j++ {
			p := &members[evs[j].mem][evs[j].idx]
			switch cur[evs[j].mem] {
			case Up:
				up--
			case Down:
				down--
			}
			cur[evs[j].mem] = p.State
			switch p.State {
			case Up:
				up++
			case Down:
				down++
			}
			decisive = p
		}
		i = j
		st, n := r(up, down, len(members))
		if started && st == state {
			continue
		}
		if n < 0 {
			n = 0
			if decisive != nil {
				n = decisive.N
			}
		}
		cp := point{T: t, E: t, L: t, State: st, N: n, Up: up, Down: down, Measurable: up + down}
		if started && st != Unknown && state != Unknown {
			cp.E, cp.L, cp.Informative = bracket(members, st, max(prevT, t-lookback), t, decisive)
		} else if decisive != nil && decisive.Informative && started {
			cp.E, cp.L, cp.Informative = decisive.E, decisive.L, true
		}
		out = appendPoint(out, cp)
		state, started, prevT = st, true, t
	}
	return out
}

// bracket intersects the brackets of the members' informative changes
// into state st with T in (from, to].
func bracket(members []track, st State, from, to int64, decisive *point) (e, l int64, informative bool) {
	e, l = int64(-1<<62), int64(1<<62)
	found := false
	for _, tr := range members {
		lo := sort.Search(len(tr), func(i int) bool { return tr[i].T > from })
		for i := lo; i < len(tr) && tr[i].T <= to; i++ {
			p := tr[i]
			if !p.Informative || !movesToward(p.State, st) {
				continue
			}
			e, l = max(e, p.E), min(l, p.L)
			found = true
		}
	}
	if found && e <= l {
		return e, l, true
	}
	if decisive != nil && decisive.Informative {
		return decisive.E, decisive.L, true
	}
	return to, to, false
}

// movesToward says whether a member changing to m pushes a group toward
// state g: members going down push a group down or partial, members
// coming up push it up or partial.
func movesToward(m, g State) bool {
	switch g {
	case Up:
		return m == Up
	case Down:
		return m == Down
	case Partial:
		return m == Up || m == Down
	}
	return false
}

// midpoints places each change at the middle of its bracket where that
// keeps the track increasing, and otherwise leaves it where it is.
func midpoints(tr track) track {
	out := make(track, len(tr))
	copy(out, tr)
	for i := range out {
		if !out[i].Informative {
			continue
		}
		m := out[i].E + (out[i].L-out[i].E)/2
		lo := int64(-1 << 62)
		if i > 0 {
			lo = out[i-1].T
		}
		hi := int64(1 << 62)
		if i+1 < len(out) {
			hi = out[i+1].T
		}
		if m > lo && m < hi {
			out[i].T = m
		}
	}
	return out
}

// align treats changes of different members toward the same state whose
// brackets share a common time as one event seen several times: each is
// moved to the middle of the common bracket, and the bracket narrowed to
// it. A border cut seen in four blocks by two vantages then lands at one
// time, bracketed by the latest of the eight "still up" and the earliest
// of the eight "now down", instead of as a staircase of midpoints half a
// round apart. Changes whose brackets do not overlap stay where they are:
// a slow decay is not squeezed into a step.
func align(members []track) []track {
	out := make([]track, len(members))
	for m, tr := range members {
		out[m] = append(track(nil), tr...)
	}
	type ref struct{ m, i int }
	for _, st := range []State{Up, Down} {
		var refs []ref
		for m, tr := range out {
			for i, p := range tr {
				if p.Informative && p.State == st {
					refs = append(refs, ref{m, i})
				}
			}
		}
		sort.Slice(refs, func(a, b int) bool {
			pa, pb := out[refs[a].m][refs[a].i], out[refs[b].m][refs[b].i]
			if pa.E != pb.E {
				return pa.E < pb.E
			}
			return refs[a].m < refs[b].m
		})
		for i := 0; i < len(refs); {
			first := out[refs[i].m][refs[i].i]
			lo, hi := first.E, first.L
			in := map[int]bool{refs[i].m: true}
			j := i + 1
			for ; j < len(refs); j++ {
				p := out[refs[j].m][refs[j].i]
				if p.E > hi || in[refs[j].m] {
					break
				}
				lo, hi = max(lo, p.E), min(hi, p.L)
				in[refs[j].m] = true
			}
			if j-i > 1 {
				mid := lo + (hi-lo)/2
				for _, r := range refs[i:j] {
					p := &out[r.m][r.i]
					p.T, p.E, p.L = mid, lo, hi
				}
			}
			i = j
		}
	}
	// Keep every track strictly increasing.
	for _, tr := range out {
		for i := 1; i < len(tr); i++ {
			if tr[i].T <= tr[i-1].T {
				tr[i].T = tr[i-1].T + 1
			}
		}
	}
	return out
}
