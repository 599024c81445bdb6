package sched

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober/sched/simnet"
)

// synthetic builds a world like the real one: one large country of
// mostly dense and some sparse /24s with hosts that come and go, two tiny
// countries, loss, latency, a few operator-named web servers, outages,
// and control targets. It returns the truth: when each block was down.
type outage struct {
	block      netip.Prefix
	start, end time.Time
}

func synthetic(w *world, seed uint64, blocks int) []outage {
	rng := rand.New(rand.NewPCG(seed, 7))
	var truth []outage
	addBlock := func(block, network, country string) {
		var hosts []uint8
		var a float64
		switch x := rng.Float64(); {
		case x < 0.5: // dense
			hosts = pick(rng, 20+rng.IntN(130))
			a = 0.3 + 0.65*rng.Float64()
		case x < 0.8: // sparse
			hosts = pick(rng, 1+rng.IntN(8))
			a = 0.5 + 0.45*rng.Float64()
		default:
			hosts = pick(rng, 8+rng.IntN(12))
			a = 0.4 + 0.55*rng.Float64()
		}
		sim := simnet.Block{
			Avail: a, Churn: 2 * time.Hour, Loss: 0.01,
			Latency: time.Duration(20+rng.IntN(200)) * time.Millisecond, Jitter: 50 * time.Millisecond,
		}
		p := pfx(block)
		if rng.IntN(20) == 0 {
			h := hosts[0]
			sim.TCP = map[uint8][]uint16{h: {80}}
			base := p.Addr().As4()
			base[3] = h
			w.service("tcp", netip.AddrFrom4(base).String(), 80, "manual", 0, 0)
		}
		w.add(block, network, country, hosts, a, sim)
		// The census saw each host answer with its availability.
		hs := w.plan.Blocks[len(w.plan.Blocks)-1].Hosts
		for i := range hs {
			hs[i].Answered = rng.Float64() < a
		}
	}
	for i := range blocks {
		// 64 networks of blocks/64 /24s each.
		net := i / max(blocks/64, 1)
		addBlock(fmt.Sprintf("10.%d.%d.0/24", i/256, i%256), fmt.Sprintf("10.%d.0.0/16", net), "AA")
	}
	for c, cc := range []string{"BB", "CC"} {
		for i := range 4 {
			addBlock(fmt.Sprintf("172.%d.%d.0/24", 16+c, i), fmt.Sprintf("172.%d.0.0/22", 16+c), cc)
		}
	}
	for i := range 3 {
		w.control(fmt.Sprintf("192.0.2.%d", 10+i))
	}
	// Outages of single blocks, and one of a whole tiny country.
	for _, i := range rng.Perm(min(blocks, 256))[:blocks/50] {
		b := pfx(fmt.Sprintf("10.0.%d.0/24", i))
		start := epoch.Add(time.Duration(rng.Int64N(int64(5 * time.Hour))))
		truth = append(truth, outage{b, start, start.Add(20*time.Minute + time.Duration(rng.Int64N(int64(100*time.Minute))))})
	}
	start := epoch.Add(3 * time.Hour)
	for i := range 4 {
		truth = append(truth, outage{pfx(fmt.Sprintf("172.16.%d.0/24", i)), start, start.Add(40 * time.Minute)})
	}
	for _, o := range truth {
		w.at(o.start, func() { w.net.SetDown(o.block, true) })
		w.at(o.end, func() { w.net.SetDown(o.block, false) })
	}
	return truth
}

func pick(rng *rand.Rand, n int) []uint8 {
	perm := rng.Perm(254)
	hs := make([]uint8, n)
	for i := range hs {
		hs[i] = uint8(perm[i] + 1)
	}
	return hs
}

func downAt(truth []outage, b netip.Prefix, t time.Time) bool {
	for _, o := range truth {
		if o.block == b && !t.Before(o.start) && t.Before(o.end) {
			return true
		}
	}
	return false
}

// TestTraffic measures the probes per /24 per hour in a realistic world
// with default settings, and checks it stays under Trinocular's 20 while
// the verdicts stay right.
func TestTraffic(t *testing.T) {
	t.Parallel()
	w := newWorld(simnet.Options{Seed: 11})
	truth := synthetic(w, 11, 2000)
	s, rec := w.start(t, Config{})
	hours := 6.0
	w.runUntil(s, epoch.Add(time.Duration(hours*float64(time.Hour))))
	w.settle(s)
	checkAccounting(t, s, rec, w.net.Sent(0))

	st := s.Stats()
	blocks := map[string]int{}
	probes := map[string]int64{}
	for _, b := range w.plan.Blocks {
		blocks[b.Country]++
		probes[b.Country] += w.net.SentTo(b.Block)
	}
	var all int64
	for c := range blocks {
		all += probes[c]
		per := float64(probes[c]) / float64(blocks[c]) / hours
		t.Logf("country %s: %d blocks, %.2f probes per /24 per hour", c, blocks[c], per)
		if per >= 20 {
			t.Errorf("country %s: %.2f probes per /24 per hour, want under Trinocular's 20", c, per)
		}
	}
	t.Logf("all: %d blocks in %d units (%d unmeasurable), %.2f probes per /24 per hour; visits by reason %v",
		st.Blocks, st.Units, st.Unmeasurable, float64(all)/float64(len(w.plan.Blocks))/hours, st.Visits)

	// Verdicts must be right: a unit of one block judged down only when
	// it was, and every long outage of such a unit seen.
	units := map[netip.Prefix]Unit{}
	for _, u := range s.Units() {
		units[u.Key] = u
	}
	var judged, wrong int
	seen := map[outage]bool{}
	for _, v := range rec.verdicts {
		if len(v.Blocks) != 1 || (v.State != Up && v.State != Down) {
			continue
		}
		judged++
		// Judge against the truth at the visit's start and end: an
		// outage may begin or end during a visit.
		truthStart, truthEnd := downAt(truth, v.Unit, v.Start), downAt(truth, v.Unit, v.Time)
		if (v.State == Down) != truthStart && (v.State == Down) != truthEnd {
			wrong++
		}
		for _, o := range truth {
			if o.block == v.Unit && v.State == Down && !v.Start.Before(o.start) && v.Start.Before(o.end) {
				seen[o] = true
			}
		}
	}
	t.Logf("%d up/down verdicts on single blocks, %d wrong (%.3f%%)", judged, wrong, 100*float64(wrong)/float64(judged))
	if float64(wrong) > 0.002*float64(judged) {
		t.Errorf("%d of %d verdicts wrong", wrong, judged)
	}
	for _, o := range truth {
		u, ok := units[o.block]
		if !ok || len(u.Blocks) != 1 || !u.Measurable || o.end.Sub(o.start) < 25*time.Minute {
			continue
		}
		if !seen[o] {
			t.Errorf("outage of %s from %v to %v was never seen", o.block, o.start.Format(time.TimeOnly), o.end.Format(time.TimeOnly))
		}
	}
}
