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

// MassFailure sets a vantage aside when it sees an implausible share of
// all the blocks it probes go down at once: Share or more of its
// measurable blocks down, counting only countries other than the one with
// the most blocks down (so a real outage of one country never makes its
// observers look broken), and at least MinOthers such blocks.
type MassFailure struct {
	Share     float64
	MinOthers int
}

// DefaultMassFailure sets a vantage aside when half of at least 10 blocks
// outside the worst-hit country go down together.
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
	// periods set aside.
	perBlock := map[int][]track{}
	for v := range in.Vantages {
		h, windows := health(in, v, raw[v], lookback)
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

// health derives a vantage's health: unhealthy while its control targets
// all go unanswered, or while it sees a mass failure. It returns the
// health track and the windows in which its evidence is set aside. The
// windows are conservative: they open at the last evidence that the
// vantage was fine, not at the first that it was not.
func health(in *Input, v int, blocks map[int]track, lookback int64) (Health, []window) {
	vt := in.Vantages[v]
	h := Health{Reasons: map[int64]string{}}
	var wins []window
	var reasons []string

	// Control targets: probes sent within one timeout of each other are
	// one check, passed if any target answered.
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
	ctr := cut(vantageTrack(checks, vt.Fresh, vt.Timeout, nil), in.Horizon)
	for i, p := range ctr {
		if p.State != Down {
			continue
		}
		w := window{From: p.E, To: 1 << 62}
		if i+1 < len(ctr) {
			w.To = ctr[i+1].L
		}
		wins = append(wins, w)
		reasons = append(reasons, "control targets unanswered")
	}

	// Mass failure across the blocks this vantage sees.
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
	cur := map[int]State{}
	downBy := map[string]int{}
	measBy := map[string]int{}
	var massFrom int64
	inMass := false
	lastDownE := map[int]int64{} // block → E of its last change to down
	for i := 0; i < len(evs); {
		t := evs[i].t
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
		mass := others >= in.Mass.MinOthers && others > 0 && float64(othersDown) >= in.Mass.Share*float64(others)
		switch {
		case mass && !inMass:
			inMass, massFrom = true, t
			for b, e := range lastDownE {
				if cur[b] == Down && e < massFrom && e > t-lookback {
					massFrom = e
				}
			}
			reasons = append(reasons, fmt.Sprintf("mass failure: %d of %d blocks outside %s down", othersDown, others, worst))
		case !mass && inMass:
			inMass = false
			wins = append(wins, window{From: massFrom, To: t})
		}
	}
	if inMass {
		wins = append(wins, window{From: massFrom, To: 1 << 62})
	}
	wins, reasons = union(wins, reasons)

	// The health track: healthy from the vantage's first evidence,
	// unhealthy inside the windows.
	first := int64(1 << 62)
	for _, tr := range blocks {
		if len(tr) > 0 {
			first = min(first, tr[0].T)
		}
	}
	if len(ctr) > 0 {
		first = min(first, ctr[0].T)
	}
	if first == 1<<62 {
		return h, wins
	}
	tr := track{{T: first, E: first, L: first, State: Up}}
	for i, w := range wins {
		from := max(w.From, first)
		tr = appendPoint(tr, point{T: from, E: w.From, L: from, State: Down, Informative: true})
		h.Reasons[tr[len(tr)-1].T] = reasons[i]
		if w.To < 1<<62 && w.To <= in.Horizon {
			tr = appendPoint(tr, point{T: w.To, E: w.To, L: w.To, State: Up})
		}
	}
	h.Track = tr
	return h, wins
}

// union merges overlapping windows (sorted by start), keeping the reason
// of the first.
func union(ws []window, reasons []string) ([]window, []string) {
	idx := make([]int, len(ws))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return ws[idx[a]].From < ws[idx[b]].From })
	var out []window
	var rs []string
	for _, i := range idx {
		w := ws[i]
		if n := len(out); n > 0 && w.From <= out[n-1].To {
			out[n-1].To = max(out[n-1].To, w.To)
			continue
		}
		out = append(out, w)
		rs = append(rs, reasons[i])
	}
	return out, rs
}
