package correlate

import "math"

// open marks an interval without an end: the key's current state.
const open = math.MaxInt64

// Interval is one row of an interval table.
type Interval struct {
	From, To       int64 // microseconds; To == open for the current state
	State          State
	StartE, StartL int64 // bracket of the start
	EndE, EndL     int64 // bracket of the end; 0 while open
	N              int   // vantages, for blocks
	Up, Down, Meas int   // blocks, for networks and countries, at the start
	Reason         string
}

// intervals turns a track into intervals: each point starts one, which
// ends where the next starts; the last is open.
func intervals(tr track) []Interval {
	out := make([]Interval, len(tr))
	for i, p := range tr {
		iv := Interval{From: p.T, To: open, State: p.State, StartE: p.E, StartL: p.L,
			N: p.N, Up: p.Up, Down: p.Down, Meas: p.Measurable}
		if i+1 < len(tr) {
			next := tr[i+1]
			iv.To, iv.EndE, iv.EndL = next.T, next.E, next.L
		}
		out[i] = iv
	}
	return out
}

// splice joins freshly derived intervals onto stored ones at k: stored
// history before k stands; from k on the new derivation decides. The
// stored interval in force at k keeps its start (and what was recorded
// at its start) when the new derivation agrees on the state there, so
// that a pass over a window gives the same rows as a pass over all time.
// It returns the desired intervals from the one in force at k onwards.
func splice(stored, fresh []Interval, k int64) []Interval {
	var sk *Interval
	for i := range stored {
		if stored[i].From <= k && k < stored[i].To {
			sk = &stored[i]
			break
		}
	}
	// The derivation's state at k; before its first interval it knew nothing.
	nk := -1
	for i := range fresh {
		if fresh[i].From <= k && k < fresh[i].To {
			nk = i
			break
		}
	}
	var rest []Interval
	var state State = Unknown
	if nk >= 0 {
		state = fresh[nk].State
		rest = fresh[nk+1:]
	} else {
		for i := range fresh {
			if fresh[i].From > k {
				rest = fresh[i:]
				break
			}
		}
	}
	var out []Interval
	switch {
	case sk != nil && sk.State == state:
		first := *sk
		first.To, first.EndE, first.EndL = open, 0, 0
		if nk >= 0 {
			first.To, first.EndE, first.EndL = fresh[nk].To, fresh[nk].EndE, fresh[nk].EndL
		} else if len(rest) > 0 {
			first.To, first.EndE, first.EndL = rest[0].From, rest[0].StartE, rest[0].StartL
		}
		out = append(out, first)
	case sk != nil:
		// The stored past disagrees with the new derivation at k (the
		// thresholds changed, say): end the stored interval at k.
		first := *sk
		first.To, first.EndE, first.EndL = k, k, k
		out = append(out, first)
		if nk >= 0 {
			cur := fresh[nk]
			cur.From, cur.StartE, cur.StartL = k, k, k
			out = append(out, cur)
		}
	case nk >= 0:
		out = append(out, fresh[nk])
	}
	return append(out, rest...)
}
