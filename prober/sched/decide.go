package sched

import (
	"math"
	"slices"
	"time"
)

// The belief model is Trinocular's (Quan, Heidemann and Pradkin,
// "Trinocular: Understanding Internet Reliability Through Adaptive
// Probing", SIGCOMM 2013, §3.2–3.3): a Bayesian belief B that a block is
// up, updated after every probe with P(reply | up) = A(b) and
// P(reply | down) = 0.01/256, clamped so that it can always change its
// mind, and read as up above 0.9 and down below 0.1.
const (
	beliefStart = 0.99
	beliefMin   = 0.01
	beliefMax   = 0.99
	upAbove     = 0.9
	downBelow   = 0.1
	// replyIfDown is the chance of an answer from a block that is down: a
	// stray or spoofed packet, 1% of the time, from any of 256 addresses.
	replyIfDown = 0.01 / 256
	// MaxProbes caps the probes of one visit (Trinocular: 15).
	MaxProbes = 15
	// recoveryMiss bounds the chance that a down block which came back
	// is missed by one visit's recovery probes (Trinocular: 0.2).
	recoveryMiss = 0.2
	// Availabilities are kept inside [availMin, availMax]: a host that
	// answered every census probe still loses a packet now and then, and
	// one that answered almost never must not make a reply impossible.
	availMin = 0.01
	availMax = 0.98
	// Trinocular judges a block only when |E(b)| >= 15 and A(b) >= 0.1,
	// possibly over several rounds; cutoff judges those too.
	trinocularMinEver  = 15
	trinocularMinAvail = 0.1
)

func clampAvail(a float64) float64 { return min(max(a, availMin), availMax) }

// A(b) is learned from results, not only taken from the census: hosts
// come and go, and a census may be months old. A(b) is the share of E(b)
// that answers while the block is up, so it can only be learned from
// probes to addresses drawn from all of E(b). Most visits are not such a
// sample: they try first the addresses that answered their last probe,
// which answer far more often than E(b) at large (in TestTraffic's world
// about 0.85 against 0.65), and counting them would inflate A(b), the
// harmful direction (a silent address would then look like strong
// evidence of an outage), while the other addresses are probed too
// rarely to be learned apart. So a share of the regular visits
// (exploreShare) ignore the history and probe E(b) in random order, as
// Trinocular does, and only their probes teach A(b).
//
// Only a visit that found the unit up may teach (an outage must not drag
// A(b) down); but a visit ends up only when something answered, so the
// all-silent visits of a sparse block that was up all along would go
// missing and A(b) would come out high. The probes of exploring visits
// that ended uncertain are kept aside and counted when a later visit
// finds the unit up, and dropped when one finds it down. (A short outage
// of a block so sparse that its visits stay uncertain throughout is then
// counted as silence while up: it can only lower A(b), the safe way.)
//
// A visit stops at its first convincing answer, but answers/probes summed
// over visits is still the right estimate (whether to send more depends
// only on answers already seen). Each visit's probes are added at once,
// and older ones decay per probe, so the estimate follows about the last
// learnWindow probes.
const (
	// exploreShare is the share of regular visits that sample E(b) in
	// random order, ignoring the history. Their first probe answers with
	// probability A(b) rather than that of an address that answered
	// last time, so each costs a little more (see TestTraffic).
	exploreShare = 0.5
	learnWindow  = 64
	// learnPrior is the weight, in probes, of the census's A(b) when
	// learning starts: a few visits must not overturn it.
	learnPrior = 8
	// A learned A(b) stays within [learnMin, learnMax]: a few dozen
	// probes cannot tell 0.01 from 0.04, and below 0.05 a failure is
	// hardly evidence anyway; above, as availMax.
	learnMin = 0.05
	learnMax = availMax
)

// rate is an answer share p resting on n probes (decayed).
type rate struct{ p, n float32 }

// add counts probes that got replies answers.
func (r rate) add(probes, replies int) rate {
	if probes <= 0 {
		return r
	}
	keep := math.Pow(1-1.0/learnWindow, float64(probes))
	n := keep*float64(r.n) + float64(probes)
	p := (keep*float64(r.n)*float64(r.p) + float64(replies)) / n
	return rate{p: float32(p), n: float32(n)}
}

// avail is the learned A(b) as visits use it: one standard error below
// the rate, within its bounds. An A(b) too high makes silence look like
// an outage, so the noise of a few dozen probes is taken on the safe
// side: in TestTraffic's world the rate itself, unbiased but noisy, made
// 0.2% of the verdicts wrong, five times as many as the census's exact
// A(b); the lower bound, fewer than the census.
func (r rate) avail() float32 {
	p := float64(r.p)
	lo := p - math.Sqrt(p*(1-p)/max(float64(r.n), 1))
	return float32(min(max(lo, learnMin), learnMax))
}

// tally counts ICMP probes of one block and their answers, a byte each.
type tally uint16

func (t tally) counts() (probes, replies int) { return int(t >> 8), int(t & 0xff) }

// plus adds a probe; past 255 probes both counts are halved, which keeps
// their ratio.
func (t tally) plus(reached bool) tally {
	p, r := t.counts()
	if p == 0xff {
		p, r = p/2, r/2
	}
	p++
	if reached {
		r++
	}
	return tally(p<<8 | r)
}

// update is Bayes' rule for one probe of an address whose answer
// probability, while its block is up, is a.
func update(b, a float64, reached bool) float64 {
	a = clampAvail(a)
	pu, pd := 1-a, 1-replyIfDown
	if reached {
		pu, pd = a, replyIfDown
	}
	nb := b * pu / (b*pu + (1-b)*pd)
	return min(max(nb, beliefMin), beliefMax)
}

// obs is one probe's evidence, in the order the probes were sent.
type obs struct {
	a       float64 // P(reply | up) of the probed address
	reached bool    // Reply or Refused (or an answer from the target itself)
	// proof marks an answer that proves the block reachable outright: a
	// TCP handshake or reset, or a DNS answer. An ICMP echo reply goes
	// through Bayes' rule like Trinocular's.
	proof bool
}

// judge reads one visit's evidence, probe by probe in the order they were
// sent, starting from the belief carried over from the last visit. It
// stops at the first probe that decides: a reply that lifts B above 0.9
// makes the unit up. Down needs B below 0.1 with no reply at all in the
// visit (an answer is never evidence of an outage). Anything else is
// uncertain, never a guess. used counts the probes the decision rests on.
func judge(prior float64, os []obs) (b float64, st State, used int) {
	b = prior
	replied := false
	for i, o := range os {
		if o.reached && o.proof {
			return beliefMax, Up, i + 1
		}
		b = update(b, o.a, o.reached)
		if o.reached {
			replied = true
			if b > upAbove {
				return b, Up, i + 1
			}
		}
	}
	if len(os) > 0 && !replied && b < downBelow {
		return b, Down, len(os)
	}
	return b, Uncertain, len(os)
}

// failuresToDown counts how many of as, failing one after another from
// belief b, bring the belief below 0.1; ok is false when all of them are
// not enough.
func failuresToDown(b float64, as []float64) (n int, ok bool) {
	for i, a := range as {
		b = update(b, a, false)
		if b < downBelow {
			return i + 1, true
		}
	}
	return len(as), false
}

// waveSize is how many probes to send at once after the visit's probes
// so far left it undecided. Trinocular probes one at a time, so a dark
// block costs up to 15 timeouts (75 s at 5 s) to call. Sending every probe
// a down verdict needs at once calls it in two timeouts but spends them
// all whenever an up block's first address happens to be silent, which
// for a block of low availability is most visits. Waves that double (2,
// 4, 8 after the first probe) and never exceed what a down verdict still
// needs are the middle way: a dark block is called in two to four
// timeouts (two for the dense, reliable blocks that are most of the
// internet), while an up block costs little more than sequential probing
// (in TestTraffic's world 7.5 probes per /24 per hour, against 10.1 when
// every needed probe goes at once). wave counts the follow-up waves, from
// 1; cands are the remaining addresses' availabilities in sending order.
func waveSize(b float64, cands []float64, budget, wave int) int {
	cands = cands[:min(len(cands), max(budget, 0))]
	n, _ := failuresToDown(b, cands)
	return min(n, 1<<min(wave, 4))
}

// recoveryProbes is how many probes a visit sends to a unit believed
// down: ⌈log 0.2 / log(1−A)⌉ (Trinocular), enough that a recovered block
// answers at least one of them with probability 0.8.
func recoveryProbes(a float64) int {
	a = clampAvail(a)
	n := int(math.Ceil(math.Log(recoveryMiss) / math.Log(1-a)))
	return min(max(n, 1), MaxProbes)
}

// avail is a group of n probe targets that answer with probability a while
// their block is up (a block's ICMP addresses, or one service).
type avail struct {
	a float64
	n int
}

// decidable says whether a unit with these targets can be judged: either
// one visit of up to 15 distinct targets, all failing, brings the belief
// from 0.99 below 0.1 (so even a block of three always-on hosts can be
// judged, which Trinocular cannot), or the unit meets Trinocular's own
// rule (|E| >= 15 and A >= 0.1), which may take a few visits.
func decidable(gs []avail) bool {
	n, sum := 0, 0.0
	for _, g := range gs {
		n += g.n
		sum += float64(g.n) * g.a
	}
	if n == 0 {
		return false
	}
	if n >= trinocularMinEver && sum/float64(n) >= trinocularMinAvail {
		return true
	}
	sorted := slices.Clone(gs)
	slices.SortFunc(sorted, func(x, y avail) int {
		switch {
		case x.a > y.a:
			return -1
		case x.a < y.a:
			return 1
		}
		return 0
	})
	b, left := beliefStart, MaxProbes
	for _, g := range sorted {
		for i := 0; i < g.n && left > 0; i++ {
			b = update(b, g.a, false)
			left--
		}
	}
	return b < downBelow
}

// poolBlock is what pooling needs to know of a block.
type poolBlock struct {
	network int     // blocks pool only within one network (prefix)
	targets []avail // its ICMP addresses and services
}

// pool groups blocks into judgement units. It expects blocks sorted by
// network, then address. A block that is decidable alone is its own unit.
// The sparse ones of a network are pooled in address order, each pool
// closed as soon as it is decidable (neighbouring blocks are likelier to
// share fate, and a small pool keeps the verdict specific); a remainder
// that is not decidable joins the network's last pool, or, if the network
// has none, stays a unit of its own that is unmeasurable. A block with no
// targets at all belongs to no unit (unitOf -1). Pools never exceed
// maxPool blocks.
func pool(bs []poolBlock, maxPool int) (unitOf []int, measurable []bool) {
	unitOf = make([]int, len(bs))
	var open []int // sparse blocks of the current network not yet in a unit
	var targets []avail
	lastPool := -1 // the current network's last closed pool
	flush := func() {
		if len(open) == 0 {
			return
		}
		if lastPool >= 0 {
			for _, i := range open {
				unitOf[i] = lastPool
			}
		} else {
			u := len(measurable)
			measurable = append(measurable, false)
			for _, i := range open {
				unitOf[i] = u
			}
		}
		open, targets = open[:0], targets[:0]
	}
	for i, b := range bs {
		if i > 0 && b.network != bs[i-1].network {
			flush()
			lastPool = -1
		}
		if len(b.targets) == 0 {
			unitOf[i] = -1
			continue
		}
		if decidable(b.targets) {
			unitOf[i] = len(measurable)
			measurable = append(measurable, true)
			continue
		}
		open = append(open, i)
		targets = append(targets, b.targets...)
		if decidable(targets) || len(open) >= maxPool {
			u := len(measurable)
			measurable = append(measurable, decidable(targets))
			for _, j := range open {
				unitOf[j] = u
			}
			if measurable[u] {
				lastPool = u
			}
			open, targets = open[:0], targets[:0]
		}
	}
	flush()
	return unitOf, measurable
}

// track is what the scheduler remembers of a unit's recent verdicts to
// time its re-checks.
type track struct {
	confirmed State // the last state two visits in a row agreed on
	last      State // the last visit's verdict
	rechecks  uint8 // re-checks spent since the last confirmed verdict
}

// follow takes a visit's verdict and says whether to re-check the unit
// soon (after Config.Recheck rather than a round), and whether the verdict
// is the first sign of a change, so that neighbouring units are checked
// too. A change is confirmed when two visits in a row agree on it; an
// uncertain verdict is re-checked until it resolves. At most maxRechecks
// re-checks follow one confirmed verdict, so a unit that stays uncertain
// falls back to the round's cadence instead of costing probes every 30 s.
func follow(t track, v State, maxRechecks int) (nt track, recheck, changed bool) {
	nt = t
	nt.last = v
	switch v {
	case Up, Down:
		if v == t.confirmed {
			nt.rechecks = 0
			return nt, false, false
		}
		if t.last == v {
			nt.confirmed = v
			nt.rechecks = 0
			return nt, false, false
		}
		changed = true
	case Uncertain:
		changed = t.last != Uncertain
	default:
		return nt, false, false
	}
	if int(nt.rechecks) < maxRechecks {
		nt.rechecks++
		return nt, true, changed
	}
	return nt, false, changed
}

// downBackoff is the delay before the next extra visit to a unit
// confirmed down, after step such visits: the re-check interval doubling
// each time (30 s, 1, 2, 4, 8 min with the defaults), so the end of a
// short outage is known to within a minute or two, while a block that
// stays dark for days costs no more than the round's recovery probes.
// ok is false once the delay reaches the unit's regular interval.
func downBackoff(recheck, interval time.Duration, step int) (time.Duration, bool) {
	if step > 30 {
		return 0, false
	}
	d := recheck << step
	return d, d < interval
}

// visitsPerRound is how many times a unit is visited each round: once, as
// in Trinocular, unless its country has so few units that a round would
// leave the country unobserved for long. Then its units share out visits
// so the country is sampled about every sample, as far as a budget of
// probes per /24 per hour allows. cost is the expected probes of one
// visit; fixed are the probes only the round's regular visit sends (the
// operator's service targets: extra visits only sample the hosts).
func visitsPerRound(round, sample time.Duration, countryUnits, blocks int, cost, fixed, budget float64) int {
	if sample <= 0 || countryUnits <= 0 || cost <= 0 {
		return 1
	}
	want := int(math.Ceil(float64(round) / (float64(countryUnits) * float64(sample))))
	afford := int(math.Floor((budget*float64(blocks)*round.Hours() - fixed) / cost))
	return min(max(min(want, afford), 1), maxVisitsPerRound)
}

// maxVisitsPerRound bounds extra visits whatever the configuration.
const maxVisitsPerRound = 64

// visitCost estimates the probes of one visit to an up unit of
// availability a: one, plus, when that fails, the wave a down verdict
// would need.
func visitCost(a float64) float64 {
	a = clampAvail(a)
	n, _ := failuresToDown(beliefStart, repeat(a, MaxProbes))
	return 1 + (1-a)*float64(n)
}

func repeat(a float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = a
	}
	return out
}
