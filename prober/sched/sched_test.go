package sched

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched/simnet"
)

func TestRoundSpreading(t *testing.T) {
	t.Parallel()
	w := newWorld(simnet.Options{Seed: 1})
	const n = 500
	for i := range n {
		w.add(fmt.Sprintf("198.%d.%d.0/24", 18+i/256, i%256), "198.18.0.0/15", "AA", hostRange(1, 20), 0.9, simnet.Block{})
	}
	s, rec := w.start(t, Config{})
	R := 11 * time.Minute
	// Start at a round boundary so that two whole rounds follow.
	first := time.Unix(0, (epoch.UnixNano()/int64(R)+1)*int64(R))
	w.runUntil(s, first.Add(2*R))

	starts := map[int64]map[netip.Prefix]time.Time{}
	for _, v := range rec.verdicts {
		if v.Why != Regular || v.Start.Before(first) {
			continue
		}
		if starts[v.Round] == nil {
			starts[v.Round] = map[netip.Prefix]time.Time{}
		}
		if _, dup := starts[v.Round][v.Unit]; dup {
			t.Fatalf("unit %s visited twice in round %d", v.Unit, v.Round)
		}
		starts[v.Round][v.Unit] = v.Start
	}
	r0 := first.UnixNano() / int64(R)
	for r := r0; r < r0+2; r++ {
		if len(starts[r]) != n {
			t.Fatalf("round %d: %d units visited, want %d", r, len(starts[r]), n)
		}
		var ts []time.Time
		for _, at := range starts[r] {
			ts = append(ts, at)
		}
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		slot := R / n
		for i := 2; i < len(ts); i++ {
			if ts[i].Sub(ts[i-2]) < slot/1000 {
				t.Fatalf("round %d: three visits within %v at %v: a burst", r, slot/1000, ts[i])
			}
		}
		for i := 1; i < len(ts); i++ {
			if gap := ts[i].Sub(ts[i-1]); gap > 2*slot {
				t.Fatalf("round %d: gap of %v between visits, want at most 2 slots (%v)", r, gap, 2*slot)
			}
		}
		// Each slot of R/n holds at most two visit starts.
		count := map[int64]int{}
		for _, at := range ts {
			k := at.Sub(time.Unix(0, r*int64(R))) / slot
			count[int64(k)]++
			if count[int64(k)] > 2 {
				t.Fatalf("round %d: slot %d holds %d visits", r, k, count[int64(k)])
			}
		}
	}
	// A unit keeps its phase from round to round.
	for u, at := range starts[r0] {
		if next := starts[r0+1][u]; next.Sub(at) != R {
			t.Fatalf("unit %s: visited at %v then %v, want exactly a round apart", u, at, next)
		}
	}
}

// labCountry builds a country like the lab's and North Korea's: four
// networks of one /24 each, 30 always-on hosts per block, and a control
// target outside.
func labCountry(w *world) []netip.Prefix {
	var bs []netip.Prefix
	for i := range 4 {
		b := fmt.Sprintf("198.19.%d.0/24", i)
		bs = append(bs, w.add(b, b, "KP", hostRange(10, 30), 1, simnet.Block{Latency: 30 * time.Millisecond}))
	}
	w.control("198.18.200.1")
	return bs
}

func TestCutIsTimedWithinARecheck(t *testing.T) {
	t.Parallel()
	w := newWorld(simnet.Options{Seed: 2})
	blocks := labCountry(w)
	cfg := Config{Round: 11 * time.Minute, Timeout: 5 * time.Second, Recheck: 30 * time.Second}
	s, rec := w.start(t, cfg)
	cut := epoch.Add(time.Hour + 137*time.Second)
	restore := cut.Add(20 * time.Minute)
	w.at(cut, func() { w.net.SetDown(pfx("198.19.0.0/22"), true) })
	w.at(restore, func() { w.net.SetDown(pfx("198.19.0.0/22"), false) })
	w.runUntil(s, restore.Add(30*time.Minute))

	// The longest the country went unobserved before the cut.
	var gap time.Duration
	var last time.Time
	for _, v := range rec.verdicts {
		if v.Start.After(cut) {
			break
		}
		if v.State != Up {
			t.Fatalf("false outage before the cut: %+v", v)
		}
		if !last.IsZero() {
			gap = max(gap, v.Start.Sub(last))
		}
		last = v.Start
	}
	if gap > 4*time.Minute {
		t.Errorf("the country went %v unobserved; extra visits should sample it well under a round", gap)
	}

	timeouts := 2*cfg.Timeout + time.Second
	var firstDown Verdict
	for _, v := range rec.verdicts {
		if v.State == Down && v.Time.After(cut) {
			firstDown = v
			break
		}
	}
	if firstDown.Time.IsZero() {
		t.Fatal("the cut was never detected")
	}
	t.Logf("cut at %v; unobserved at most %v before; first down verdict %v later, after a %v visit of %d probes",
		cut.Format(time.TimeOnly), gap, firstDown.Time.Sub(cut), firstDown.Time.Sub(firstDown.Start), firstDown.Probes)
	if d := firstDown.Time.Sub(cut); d > gap+timeouts {
		t.Errorf("cut detected %v after it happened; want within the longest gap between visits (%v) plus two timeouts", d, gap)
	}
	if d := firstDown.Time.Sub(firstDown.Start); d > timeouts {
		t.Errorf("the visit that called the cut took %v: the probes a down verdict needs should go out together after the first failure (two timeouts, not fifteen)", d)
	}

	for _, b := range blocks {
		vs := verdictsOf(rec.verdicts, b)
		i := slices.IndexFunc(vs, func(v Verdict) bool { return v.State == Down && v.Time.After(cut) })
		if i < 0 {
			t.Fatalf("%s never judged down", b)
		}
		if d := vs[i].Time.Sub(firstDown.Time); d > cfg.Recheck+timeouts {
			t.Errorf("%s judged down %v after the first unit; neighbours should be checked within a re-check interval", b, d)
		}
		// The confirmation is a re-check, or a neighbour's nudge if that
		// came first.
		if i+1 >= len(vs) || vs[i+1].State != Down || vs[i+1].Why == Regular || vs[i+1].Why == Extra {
			t.Errorf("%s: the down verdict was not confirmed by an early visit: next verdict %+v", b, vs[min(i+1, len(vs)-1)])
		} else if d := vs[i+1].Time.Sub(vs[i].Time); d > cfg.Recheck+timeouts {
			t.Errorf("%s: confirmed %v after the first down verdict, want within %v", b, d, cfg.Recheck+timeouts)
		}
		j := slices.IndexFunc(vs, func(v Verdict) bool { return v.State == Up && v.Start.After(restore) })
		if j < 0 {
			t.Fatalf("%s never judged up again", b)
		}
		for _, v := range vs[i:j] {
			if v.State == Up {
				t.Errorf("%s judged up during the cut: %+v", b, v)
			}
		}
		if d := vs[j].Time.Sub(restore); d > gap+cfg.Recheck+timeouts {
			t.Errorf("%s: back up %v after the restore; want within %v", b, d, gap+cfg.Recheck+timeouts)
		}
	}

	// The first down verdict brought the control target's evidence.
	ok := false
	for _, r := range rec.results {
		if r.Control && !r.Sent.Before(firstDown.Time) && r.Sent.Sub(firstDown.Time) < time.Second {
			ok = r.Outcome == prober.Reply
		}
	}
	if !ok {
		t.Error("the control target was not probed (or did not answer) when the cut was first seen")
	}
	w.settle(s)
	checkAccounting(t, s, rec, w.net.Sent(0))
}

func TestFilteredICMPIsJudgedByTCP(t *testing.T) {
	t.Parallel()
	w := newWorld(simnet.Options{Seed: 3})
	// A: ping used to work (the census found 20 hosts) but the network now
	// filters ICMP; an operator named its web server.
	a := w.add("198.19.0.0/24", "198.19.0.0/24", "KP", hostRange(10, 20), 0.9,
		simnet.Block{FilterICMP: true, TCP: map[uint8][]uint16{10: {80}}})
	w.service("tcp", "198.19.0.10", 80, "manual", 0, 0)
	// B: the census found no ICMP at all, only three web servers.
	b := w.add("198.19.1.0/24", "198.19.1.0/24", "KP", nil, 0,
		simnet.Block{Hosts: []uint8{}, FilterICMP: true, TCP: map[uint8][]uint16{5: {443}, 6: {443}, 7: {443}}})
	for _, h := range []string{"198.19.1.5", "198.19.1.6", "198.19.1.7"} {
		w.service("tcp", h, 443, "census", 3, 3)
	}
	// C: like A without a service: ICMP alone wrongly sees it dark.
	c := w.add("198.19.2.0/24", "198.19.2.0/24", "KP", hostRange(10, 20), 0.9, simnet.Block{FilterICMP: true})
	s, rec := w.start(t, Config{})
	w.runUntil(s, epoch.Add(3*time.Hour))

	for _, u := range []netip.Prefix{a, b} {
		vs := verdictsOf(rec.verdicts, u)
		if len(vs) < 10 {
			t.Fatalf("%s: only %d verdicts", u, len(vs))
		}
		for _, v := range vs {
			if v.State != Up || !v.Evidence.Has(prober.KindTCP) {
				t.Fatalf("%s: %v with evidence %v, want up on TCP evidence", u, v.State, v.Evidence)
			}
		}
	}
	if vs := verdictsOf(rec.verdicts, c); len(vs) == 0 || vs[len(vs)-1].State != Down {
		t.Fatalf("the ICMP-only block should look down, got %v", vs)
	}
	w.settle(s)
	checkAccounting(t, s, rec, w.net.Sent(0))
}

func TestSparseBlocksArePooled(t *testing.T) {
	t.Parallel()
	w := newWorld(simnet.Options{Seed: 4})
	// Four /24s of one network with three hosts each, answering 60% of
	// the time: one alone is too sparse to call down, three are enough,
	// and the fourth joins them.
	var pooled []netip.Prefix
	for i := range 4 {
		pooled = append(pooled, w.add(fmt.Sprintf("198.19.%d.0/24", i), "198.19.0.0/22", "KP", []uint8{1, 2, 3}, 0.6,
			simnet.Block{Avail: 0.6}))
	}
	// A lone block with one host in its own network: unmeasurable.
	lone := w.add("198.19.8.0/24", "198.19.8.0/24", "KP", []uint8{9}, 0.9, simnet.Block{})
	s, rec := w.start(t, Config{})

	units := s.Units()
	if len(units) != 2 {
		t.Fatalf("units %+v, want the pool and the lone block", units)
	}
	if u := units[0]; !slices.Equal(u.Blocks, pooled) || !u.Measurable || u.Addresses != 12 {
		t.Fatalf("pooled unit %+v", u)
	}
	if u := units[1]; u.Key != lone || u.Measurable {
		t.Fatalf("lone unit %+v, want unmeasurable", u)
	}

	cut := epoch.Add(2 * time.Hour)
	w.at(cut, func() { w.net.SetDown(pfx("198.19.0.0/20"), true) })
	w.runUntil(s, cut.Add(time.Hour))
	sawDown := false
	for _, v := range rec.verdicts {
		switch v.Unit {
		case pooled[0]:
			if !slices.Equal(v.Blocks, pooled) {
				t.Fatalf("pooled verdict lists blocks %v", v.Blocks)
			}
			if v.Start.Before(cut) && v.State == Down {
				t.Fatalf("pool judged down while up: %+v", v)
			}
			if v.Start.After(cut) && v.State == Up {
				t.Fatalf("pool judged up while cut: %+v", v)
			}
			sawDown = sawDown || v.State == Down
		case lone:
			if v.State != Up && v.State != Unmeasurable {
				t.Fatalf("lone block judged %v; it can only be up or unmeasurable", v.State)
			}
			if v.Start.After(cut) && v.State == Up {
				t.Fatalf("lone block judged up while cut")
			}
		}
	}
	if !sawDown {
		t.Fatal("the pooled unit was never judged down during the cut")
	}
	w.settle(s)
	checkAccounting(t, s, rec, w.net.Sent(0))
}

func TestPoliteness(t *testing.T) {
	t.Parallel()
	w := newWorld(simnet.Options{Seed: 5})
	// A block of poorly available hosts: deciding it takes many probes.
	b := w.add("198.19.0.0/24", "198.19.0.0/24", "KP", hostRange(1, 40), 0.3, simnet.Block{Avail: 0.3})
	w.add("198.19.1.0/24", "198.19.1.0/24", "KP", hostRange(1, 20), 1, simnet.Block{})
	// The block flaps every 45 s for three hours: the worst case for
	// re-checks and nudges.
	down := false
	var flap func()
	flap = func() {
		down = !down
		w.net.SetDown(b, down)
		w.clk.AfterFunc(45*time.Second, flap)
	}
	w.clk.AfterFunc(time.Minute, flap)
	cfg := Config{BlockCap: 20}
	s, rec := w.start(t, cfg)
	end := epoch.Add(3 * time.Hour)
	w.runUntil(s, end)
	w.settle(s)
	cfg, _ = cfg.withDefaults()

	last := map[netip.Addr]time.Time{}
	var toB []time.Time
	for _, r := range rec.results {
		if l, ok := last[r.Target.Addr]; ok && r.Sent.Sub(l) < cfg.MinInterval {
			t.Fatalf("%s probed %v apart, under the %v minimum", r.Target.Addr, r.Sent.Sub(l), cfg.MinInterval)
		}
		last[r.Target.Addr] = r.Sent
		if b.Contains(r.Target.Addr) {
			toB = append(toB, r.Sent)
		}
	}
	// A token bucket of two visits (30 probes) refilled at BlockCap per
	// hour allows at most 30+BlockCap probes in any hour.
	limit := 2*MaxProbes + int(cfg.BlockCap)
	for i := range toB {
		j, _ := slices.BinarySearchFunc(toB, toB[i].Add(time.Hour), func(a, b time.Time) int { return a.Compare(b) })
		if n := j - i; n > limit {
			t.Fatalf("%d probes to %s in the hour from %v, cap allows %d", n, b, toB[i], limit)
		}
	}
	t.Logf("%d probes to the flapping block in 3 h (%.1f/h), %d visits capped", len(toB), float64(len(toB))/3, s.Stats().Capped)
	if s.Stats().Capped == 0 {
		t.Fatal("the cap never had to act: the test is not testing it")
	}
	checkAccounting(t, s, rec, w.net.Sent(0))
}

// TestCountryTiming places the start and end of whole-country outages as
// a correlator would, from verdicts alone: the start between the last
// answer before the cut and the first silent visit after it, the end
// likewise, each at the midpoint. With 11-minute rounds, a country of four
// /24s (the lab's, North Korea's) must be timed within 60 s.
func TestCountryTiming(t *testing.T) {
	t.Parallel()
	w := newWorld(simnet.Options{Seed: 9})
	labCountry(w)
	cfg := Config{Round: 11 * time.Minute, Timeout: 5 * time.Second}
	s, rec := w.start(t, cfg)
	country := pfx("198.19.0.0/22")
	type outage struct{ cut, restore time.Time }
	var outages []outage
	at := epoch.Add(time.Hour)
	for i := range 30 {
		// Cuts at awkward times, of 3 to 60 minutes.
		at = at.Add(time.Duration(61+i*7) * time.Minute).Add(time.Duration(i*37) * time.Second)
		o := outage{at, at.Add(time.Duration(3+i*2) * time.Minute)}
		outages = append(outages, o)
		w.at(o.cut, func() { w.net.SetDown(country, true) })
		w.at(o.restore, func() { w.net.SetDown(country, false) })
		at = o.restore
	}
	w.runUntil(s, at.Add(time.Hour))

	// When each verdict shows the country up (an answer arrived) or down
	// (the last silent probe was sent a timeout before the verdict).
	upAt := func(v Verdict) time.Time { return v.Time }
	downAt := func(v Verdict) time.Time { return v.Time.Add(-cfg.Timeout) }
	var worst, sum time.Duration
	for _, o := range outages {
		var lastUp, firstDown, lastDown, firstUp time.Time
		for _, v := range rec.verdicts {
			switch {
			case v.State == Up && upAt(v).Before(o.cut):
				lastUp = upAt(v)
			case v.State == Down && downAt(v).After(o.cut) && firstDown.IsZero():
				firstDown = downAt(v)
			case v.State == Down && downAt(v).Before(o.restore):
				lastDown = downAt(v)
			case v.State == Up && upAt(v).After(o.restore) && firstUp.IsZero():
				firstUp = upAt(v)
			}
		}
		if firstDown.IsZero() || firstUp.IsZero() {
			t.Fatalf("outage %v–%v not seen", o.cut, o.restore)
		}
		start := lastUp.Add(firstDown.Sub(lastUp) / 2)
		end := lastDown.Add(firstUp.Sub(lastDown) / 2)
		for _, e := range []time.Duration{start.Sub(o.cut).Abs(), end.Sub(o.restore).Abs()} {
			worst = max(worst, e)
			sum += e
		}
	}
	t.Logf("%d outages of the lab country with 11-minute rounds: start and end placed within %v on average, %v at worst",
		len(outages), sum/time.Duration(2*len(outages)), worst)
	if worst > time.Minute {
		t.Errorf("an outage edge was placed %v from the truth, want within 60 s", worst)
	}
}
