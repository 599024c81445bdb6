package correlate

import (
	"fmt"
	"net/netip"
	"sort"
)

// Block is a /24 (or smaller prefix) with the network and country it
// belongs to.
type Block struct {
	Prefix  netip.Prefix
	Network netip.Prefix
	Country string
}

// Vantage describes how stale a vantage's evidence may get.
type Vantage struct {
	Name string
	// Fresh is how long a verdict stays valid without a newer one
	// (microseconds): about two of the vantage's rounds.
	Fresh int64
	// Timeout is the vantage's probe timeout (microseconds).
	Timeout int64
}

// Control is one probe of a control target by a vantage.
type Control struct {
	Sent    int64
	Reached bool
}

// MassFailure is when a vantage sees an implausible share of all the
// blocks it probes go down at once: Share or more of its measurable
// blocks down, counting only countries other than the one with the most
// blocks down (so a real outage of one country never makes its observers
// look broken), and at least MinOthers such blocks. The vantage is set
// aside for it unless the other vantages saw the same blocks down (see
// health).
type MassFailure struct {
	Share     float64
	MinOthers int
}

// DefaultMassFailure: half of at least 10 blocks outside the worst-hit
// country going down together.
var DefaultMassFailure = MassFailure{Share: 0.5, MinOthers: 10}

// Input is everything the correlator reads for one pass.
type Input struct {
	Blocks     []Block
	Vantages   []Vantage
	Thresholds map[string]Thresholds // by country; DefaultThresholds where absent
	// Obs[v][b] are vantage v's verdicts on block b, sorted by At.
	Obs map[int]map[int][]Obs
	// Controls[v] are vantage v's control probes, sorted by Sent.
	Controls map[int][]Control
	Horizon  int64 // the latest evidence time; nothing is said beyond it
	Mass     MassFailure
}

// Health is a vantage's health track with, for each unhealthy point, why.
type Health struct {
	Track   track
	Reasons map[int64]string // by point T
}

// Output is the derived tracks.
type Output struct {
	Blocks    map[int]track // by index into Input.Blocks; only blocks with evidence
	Networks  map[netip.Prefix]track
	Countries map[string]track
	Health    map[int]Health // by vantage index
}

// Run derives every track from the input.
func Run(in *Input) *Output {
	out := &Output{
		Blocks:    map[int]track{},
		Networks:  map[netip.Prefix]track{},
		Countries: map[string]track{},
		Health:    map[int]Health{},
	}
	lookback := int64(0)
	for _, v := range in.Vantages {
		lookback = max(lookback, v.Fresh)
	}

	// Per vantage and block: what that vantage alone saw.
	raw := map[int]map[int]track{}
	for v, byBlock := range in.Obs {
		raw[v] = map[int]track{}
		vt := in.Vantages[v]
		for b, obs := range byBlock {
			raw[v][b] = cut(vantageTrack(obs, vt.Fresh, vt.Timeout, nil), in.Horizon)
		}
	}

	// Vantage health, and each vantage's evidence with its unhealthy
	// periods set aside. Control targets come first: a vantage that
	// cannot reach its own controls can neither confirm nor contradict
	// what another saw.
	ctl := make([]controlCheck, len(in.Vantages))
	for v := range in.Vantages {
		ctl[v] = controls(in, v)
	}
	perBlock := map[int][]track{}
	for v := range in.Vantages {
		h, windows := health(in, v, raw, ctl, lookback)
		if len(h.Track) > 0 {
			out.Health[v] = h
		}
		vt := in.Vantages[v]
		for b, tr := range raw[v] {
			if len(windows) > 0 {
				tr = cut(vantageTrack(in.Obs[v][b], vt.Fresh, vt.Timeout, windows), in.Horizon)
			}
			perBlock[b] = append(perBlock[b], tr)
		}
	}

	// Blocks: across vantages.
	blockIdx := make([]int, 0, len(perBlock))
	for b := range perBlock {
		blockIdx = append(blockIdx, b)
	}
	sort.Ints(blockIdx)
	for _, b := range blockIdx {
		tr := midpoints(combine(align(perBlock[b]), anyUp, lookback))
		out.Blocks[b] = tr
	}

	// Networks and countries: the share of their measurable blocks up.
	// Blocks never observed count towards the total only.
	nets := map[netip.Prefix][]track{}
	countries := map[string][]track{}
	totalNet := map[netip.Prefix]int{}
	totalCountry := map[string]int{}
	for i, blk := range in.Blocks {
		totalNet[blk.Network]++
		totalCountry[blk.Country]++
		if tr, ok := out.Blocks[i]; ok {
			nets[blk.Network] = append(nets[blk.Network], tr)
			countries[blk.Country] = append(countries[blk.Country], tr)
		}
	}
	country := map[netip.Prefix]string{}
	for _, blk := range in.Blocks {
		country[blk.Network] = blk.Country
	}
	for n, trs := range nets {
		th := in.threshold(country[n])
		out.Networks[n] = midpoints(combine(align(trs), th.rule(), lookback))
	}
	for c, trs := range countries {
		out.Countries[c] = midpoints(combine(align(trs), in.threshold(c).rule(), lookback))
	}
	return out
}

func (in *Input) threshold(country string) Thresholds {
	if th, ok := in.Thresholds[country]; ok {
		return th
	}
	return DefaultThresholds
}

// aside is a window in which a vantage's evidence is set aside, and why.
type aside struct {
	window
	reason string
}

// health derives vantage v's health: unhealthy while its control targets
// all go unanswered, or while it sees a mass failure that the other
// vantages contradict. It returns the health track and the windows in
// which its evidence is set aside. The windows are conservative: they
// open at the last evidence that the vantage was fine, not at the first
// that it was not.
//
// A mass failure alone does not say whose fault it is: two countries cut
// at once look, from each vantage, like its own uplink failing. Like
// Thunderping, the vantage is blamed only when the others disagree with
// it. Of the blocks it lost, the other vantages (those answered by their
// control targets) may have reached some while it had them down, and
// seen others down too (see crossCheck). When they saw more down than
// they reached, the failure is real and nobody is set aside; otherwise
// the vantage is. When no other vantage could check (a single vantage,
// or the others probe other blocks or are unhealthy themselves), that
// keeps the conservative rule: an outage seen by one vantage alone is
// reported as unknown rather than risk blaming the targets for the
// vantage's fault.
func health(in *Input, v int, raw map[int]map[int]track, ctl []controlCheck, lookback int64) (Health, []window) {
	h := Health{Reasons: map[int64]string{}}
	var asides []aside
	for _, w := range ctl[v].windows {
		asides = append(asides, aside{w, "control targets unanswered"})
	}
	for _, mf := range massFailures(in, raw[v], lookback) {
		reached, confirmed := crossCheck(in, v, mf, ctl)
		if confirmed > reached {
			continue // the others saw it too: a real outage
		}
		reason := fmt.Sprintf("mass failure: %d of %d blocks outside %s down", mf.othersDown, mf.others, mf.worst)
		if reached+confirmed == 0 {
			reason += "; no other vantage could check"
		} else {
			reason += fmt.Sprintf("; other vantages reached %d of the %d lost and saw %d down", reached, len(mf.lost), confirmed)
		}
		asides = append(asides, aside{mf.window, reason})
	}
	asides = union(asides)
	wins := make([]window, len(asides))
	for i, a := range asides {
		wins[i] = a.window
	}

	// The health track: healthy from the vantage's first evidence,
	// unhealthy inside the windows.
	first := int64(1 << 62)
	for _, tr := range raw[v] {
		if len(tr) > 0 {
			first = min(first, tr[0].T)
		}
	}
	if ctr := ctl[v].track; len(ctr) > 0 {
		first = min(first, ctr[0].T)
	}
	if first == 1<<62 {
		return h, wins
	}
	tr := track{{T: first, E: first, L: first, State: Up}}
	for _, a := range asides {
		from := max(a.From, first)
		tr = appendPoint(tr, point{T: from, E: a.From, L: from, State: Down, Informative: true})
		h.Reasons[tr[len(tr)-1].T] = a.reason
		if a.To < 1<<62 && a.To <= in.Horizon {
			tr = appendPoint(tr, point{T: a.To, E: a.To, L: a.To, State: Up})
		}
	}
	h.Track = tr
	return h, wins
}

// controlCheck is a vantage's control-target track and the windows in
// which none of its control targets answered.
type controlCheck struct {
	track   track
	windows []window
}

// controls checks a vantage's control targets: probes sent within one
// timeout of each other are one check, passed if any target answered.
func controls(in *Input, v int) controlCheck {
	vt := in.Vantages[v]
	ctl := in.Controls[v]
	var checks []Obs
	for i := 0; i < len(ctl); {
		j, ok := i, false
		for ; j < len(ctl) && ctl[j].Sent-ctl[i].Sent <= vt.Timeout; j++ {
			ok = ok || ctl[j].Reached
		}
		st := Down
		if ok {
			st = Up
		}
		checks = append(checks, Obs{Sent: ctl[i].Sent, At: ctl[j-1].Sent + vt.Timeout, State: st})
		i = j
	}
	var cc controlCheck
	cc.track = cut(vantageTrack(checks, vt.Fresh, vt.Timeout, nil), in.Horizon)
	for i, p := range cc.track {
		if p.State != Down {
			continue
		}
		w := window{From: p.E, To: 1 << 62}
		if i+1 < len(cc.track) {
			w.To = cc.track[i+1].L
		}
		cc.windows = append(cc.windows, w)
	}
	return cc
}

// massFailure is a window in which a vantage saw an implausible share of
// its blocks go down at once.
type massFailure struct {
	window
	worst              string // the country with the most blocks down, left out of the count
	others, othersDown int    // measurable and down outside it, at the opening
	lost               []int  // the blocks the vantage had down in the window, sorted
}

// massFailures finds the windows in which a vantage's own tracks show a
// mass failure: Share or more of at least MinOthers measurable blocks
// outside the worst-hit country down.
//
// A window opens at the last evidence before the failure that the blocks
// then down were fine. It closes with hysteresis, once fewer than half of
// Share of those blocks are still down (or too few are measurable), and
// at the first evidence of the change that closed it rather than at its
// midpoint: the blocks of a failure come back one by one over a round,
// and a window closed at the first return would let the verdicts of the
// blocks not yet back (made before the failure ended) count again, as
// short false outages just after the window.
func massFailures(in *Input, blocks map[int]track, lookback int64) []massFailure {
	country := func(b int) string { return in.Blocks[b].Country }
	type ev struct {
		t int64
		b int
		p *point
	}
	var evs []ev
	for b, tr := range blocks {
		for i := range tr {
			evs = append(evs, ev{tr[i].T, b, &tr[i]})
		}
	}
	sort.Slice(evs, func(i, j int) bool {
		if evs[i].t != evs[j].t {
			return evs[i].t < evs[j].t
		}
		return evs[i].b < evs[j].b
	})
	var out []massFailure
	cur := map[int]State{}
	downBy := map[string]int{}
	measBy := map[string]int{}
	lastDownE := map[int]int64{} // block → E of its last change to down
	var open *massFailure
	lost := map[int]bool{}
	for i := 0; i < len(evs); {
		t := evs[i].t
		first := i
		end := t // the latest first evidence of the changes at t
		for ; i < len(evs) && evs[i].t == t; i++ {
			b, p := evs[i].b, evs[i].p
			c := country(b)
			switch cur[b] {
			case Up:
				measBy[c]--
			case Down:
				measBy[c]--
				downBy[c]--
			}
			cur[b] = p.State
			switch p.State {
			case Up:
				measBy[c]++
			case Down:
				measBy[c]++
				downBy[c]++
				lastDownE[b] = p.E
			}
			end = max(end, p.L)
		}
		worst, worstDown := "", -1
		for c, d := range downBy {
			if d > worstDown || (d == worstDown && c < worst) {
				worst, worstDown = c, d
			}
		}
		others, othersDown := 0, 0
		for c, m := range measBy {
			if c != worst {
				others += m
				othersDown += downBy[c]
			}
		}
		enough := others >= in.Mass.MinOthers && others > 0
		share := 0.0
		if others > 0 {
			share = float64(othersDown) / float64(others)
		}
		switch {
		case open == nil && enough && share >= in.Mass.Share:
			open = &massFailure{window: window{From: t}, worst: worst, others: others, othersDown: othersDown}
			for b, st := range cur {
				if st != Down {
					continue
				}
				lost[b] = true
				if e := lastDownE[b]; e < open.From && e > t-lookback {
					open.From = e
				}
			}
		case open != nil && (!enough || share < in.Mass.Share/2):
			open.To = end
			out = append(out, open.close(lost))
			open, lost = nil, map[int]bool{}
		case open != nil:
			for _, e := range evs[first:i] {
				if e.p.State == Down {
					lost[e.b] = true
				}
			}
		}
	}
	if open != nil {
		open.To = 1 << 62
		out = append(out, open.close(lost))
	}
	return out
}

func (mf *massFailure) close(lost map[int]bool) massFailure {
	for b := range lost {
		mf.lost = append(mf.lost, b)
	}
	sort.Ints(mf.lost)
	return *mf
}

// crossCheck asks the other vantages about the blocks vantage v lost in a
// mass failure. A block is reached when another vantage got an answer
// from it between v's first and last evidence of it being down: the
// block was up then, so v's failure was v's own. It is confirmed when
// another vantage saw it down within v's freshness of v's own evidence
// (the others visit it on their own schedule, up to a round later or
// earlier). Verdicts of a vantage while its control targets go
// unanswered count for nothing.
func crossCheck(in *Input, v int, mf massFailure, ctl []controlCheck) (reached, confirmed int) {
	vt := in.Vantages[v]
	for _, b := range mf.lost {
		runs := downRuns(in.Obs[v][b], vt.Fresh, vt.Timeout, mf.window)
		if len(runs) == 0 {
			continue
		}
		lo, hi := runs[0].From-vt.Fresh, runs[len(runs)-1].To+vt.Fresh
		up, down := false, false
		for u := range in.Vantages {
			if u == v {
				continue
			}
			ut := in.Vantages[u]
			obs := in.Obs[u][b]
			// A down verdict's evidence ends at or before its At, and a
			// visit lasts less than a round.
			i := sort.Search(len(obs), func(i int) bool { return obs[i].At >= lo })
			for ; i < len(obs) && obs[i].At <= hi+ut.Fresh; i++ {
				o := obs[i]
				if o.State != Up && o.State != Down {
					continue
				}
				first, last := o.evidence(ut.Timeout)
				if inside(ctl[u].windows, first) {
					continue
				}
				for _, r := range runs {
					switch {
					case o.State == Up && first >= r.From && first <= r.To:
						up = true
					case o.State == Down && last >= r.From-vt.Fresh && first <= r.To+vt.Fresh:
						down = true
					}
				}
			}
		}
		switch {
		case up:
			reached++
		case down:
			confirmed++
		}
	}
	return reached, confirmed
}

// downRuns returns the spans [From, To] from the first to the last
// evidence of each run of down verdicts (sorted by At) that overlaps w. A
// run ends at an up verdict or where the evidence goes stale.
func downRuns(obs []Obs, fresh, timeout int64, w window) []window {
	var runs []window
	var r window
	in := false
	var lastAt int64
	flush := func() {
		if in && r.To >= w.From && r.From < w.To {
			runs = append(runs, r)
		}
		in = false
	}
	for _, o := range obs {
		if o.State != Up && o.State != Down {
			continue
		}
		if in && o.At > lastAt+fresh {
			flush()
		}
		if o.State == Up {
			flush()
			continue
		}
		first, last := o.evidence(timeout)
		if !in {
			r, in = window{From: first, To: last}, true
		}
		r.To, lastAt = max(r.To, last), o.At
	}
	flush()
	return runs
}

// inside says whether t falls in one of the windows (sorted, disjoint).
func inside(ws []window, t int64) bool {
	i := sort.Search(len(ws), func(i int) bool { return ws[i].To > t })
	return i < len(ws) && ws[i].From <= t
}

// union merges overlapping windows, keeping the reason of the first.
func union(as []aside) []aside {
	as = append([]aside(nil), as...)
	sort.SliceStable(as, func(i, j int) bool { return as[i].From < as[j].From })
	var out []aside
	for _, a := range as {
		if n := len(out); n > 0 && a.From <= out[n-1].To {
			out[n-1].To = max(out[n-1].To, a.To)
			continue
		}
		out = append(out, a)
	}
	return out
}
