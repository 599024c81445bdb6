package sched

import (
	"math"
	"net/netip"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/cutoffnet/cutoff/prober"
)

// answers builds a visit's evidence from a pattern: 'r' reply, 'f' no
// reply, 'p' a TCP/DNS answer (proof), all at availability a.
func answers(a float64, pattern string) []obs {
	os := make([]obs, len(pattern))
	for i, c := range pattern {
		os[i] = obs{a: a, reached: c != 'f', proof: c == 'p'}
	}
	return os
}

func TestJudge(t *testing.T) {
	tests := []struct {
		name      string
		prior     float64
		give      []obs
		wantState State
		wantUsed  int
	}{
		{"up block answers at once", 0.99, answers(0.5, "r"), Up, 1},
		{"stops at the first reply", 0.99, answers(0.5, "rff"), Up, 1},
		{"reply after two losses", 0.99, answers(0.5, "ffr"), Up, 3},
		{"ten silent at A=0.5 is down", 0.99, answers(0.5, "ffffffffff"), Down, 10},
		{"nine silent at A=0.5 is not enough", 0.99, answers(0.5, "fffffffff"), Uncertain, 9},
		{"two silent at A=0.98 is down", 0.99, answers(0.98, "ff"), Down, 2},
		{"one silent at A=0.98 is uncertain", 0.99, answers(0.98, "f"), Uncertain, 1},
		{"fifteen silent at A=0.05 stays uncertain, not up", 0.99, answers(0.05, "fffffffffffffff"), Uncertain, 15},
		{"down block stays down", 0.01, answers(0.5, "fff"), Down, 3},
		{"down block recovers on a reply", 0.01, answers(0.5, "fr"), Up, 2},
		{"one reply from a nearly silent block is not enough", 0.01, answers(0.02, "r"), Uncertain, 1},
		{"a TCP answer proves a down block up", 0.01, answers(0.1, "p"), Up, 1},
		{"a TCP answer after silence", 0.99, answers(0.5, "fffffffp"), Up, 8},
		{"uncertain prior, one silent at A=0.9 is down", 0.2, answers(0.9, "f"), Down, 1},
		{"no evidence", 0.99, nil, Uncertain, 0},
		{
			"an answer is never evidence of an outage",
			0.01,
			append(answers(0.01, "r"), answers(0.98, "ff")...),
			Uncertain, 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, st, used := judge(tt.prior, tt.give)
			if st != tt.wantState || used != tt.wantUsed {
				t.Errorf("judge = %v after %d probes (belief %.3f), want %v after %d", st, used, b, tt.wantState, tt.wantUsed)
			}
			if b < beliefMin || b > beliefMax {
				t.Errorf("belief %v outside [%v, %v]", b, beliefMin, beliefMax)
			}
		})
	}
}

func TestUpdateMatchesBayes(t *testing.T) {
	// From 0.99 with A=0.5, one silent probe: 0.495/(0.495+0.01*(1-ε)).
	want := 0.99 * 0.5 / (0.99*0.5 + 0.01*(1-0.01/256))
	if got := update(0.99, 0.5, false); math.Abs(got-want) > 1e-12 {
		t.Fatalf("update = %v, want %v", got, want)
	}
	if got := update(0.99, 0.5, true); got != beliefMax {
		t.Fatalf("update after a reply = %v, want the clamp %v", got, beliefMax)
	}
	if got := update(0.01, 0.5, false); got != beliefMin {
		t.Fatalf("update of a down block after silence = %v, want the clamp %v", got, beliefMin)
	}
}

func TestRecoveryProbes(t *testing.T) {
	tests := []struct {
		name string
		give float64
		want int
	}{
		{"A=0.5", 0.5, 3},  // log 0.2 / log 0.5 = 2.32
		{"A=0.9", 0.9, 1},  // 0.70
		{"A=0.3", 0.3, 5},  // 4.51
		{"A=0.1", 0.1, 15}, // 15.3, capped at a visit's 15
		{"A=1 is treated as 0.98", 1, 1},
		{"A=0 is treated as 0.01", 0, 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := recoveryProbes(tt.give); got != tt.want {
				t.Errorf("recoveryProbes(%v) = %d, want %d", tt.give, got, tt.want)
			}
		})
	}
}

func TestWaveSize(t *testing.T) {
	tests := []struct {
		name   string
		belief float64
		cands  []float64
		budget int
		wave   int
		want   int
	}{
		{"first follow-up wave at A=0.5 is two", update(0.99, 0.5, false), repeat(0.5, 20), 14, 1, 2},
		{"third follow-up wave at A=0.5 is eight", update(0.99, 0.5, false), repeat(0.5, 20), 14, 3, 8},
		{"never more than a down verdict needs", update(0.99, 0.5, false), repeat(0.5, 20), 14, 4, 9},
		{"after one silent probe at A=0.98 one more decides", update(0.99, 0.98, false), repeat(0.98, 20), 14, 1, 1},
		{"too few addresses: send what there is", update(0.99, 0.5, false), repeat(0.5, 4), 14, 4, 4},
		{"budget caps the wave", update(0.99, 0.3, false), repeat(0.3, 40), 3, 4, 3},
		{"no budget", 0.5, repeat(0.5, 4), 0, 1, 0},
		{"mixed: stops once the reliable ones suffice", update(0.99, 0.9, false), []float64{0.9, 0.9, 0.2, 0.2}, 14, 4, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := waveSize(tt.belief, tt.cands, tt.budget, tt.wave); got != tt.want {
				t.Errorf("waveSize = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestDecidable(t *testing.T) {
	tests := []struct {
		name string
		give []avail
		want bool
	}{
		{"three always-on hosts", []avail{{0.95, 3}}, true},
		{"two always-on hosts", []avail{{0.95, 2}}, false},
		{"ten hosts at A=0.5", []avail{{0.5, 10}}, true},
		{"nine hosts at A=0.5", []avail{{0.5, 9}}, false},
		{"Trinocular's minimum: 15 at A=0.1", []avail{{0.1, 15}}, true},
		{"14 at A=0.2", []avail{{0.2, 14}}, false},
		{"many at A=0.05", []avail{{0.05, 200}}, false},
		{"three TCP services, no ICMP", []avail{{0.95, 1}, {0.95, 1}, {0.95, 1}}, true},
		{"one good host and two poor", []avail{{0.2, 2}, {0.95, 1}}, false},
		{"nothing", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decidable(tt.give); got != tt.want {
				t.Errorf("decidable(%v) = %v, want %v", tt.give, got, tt.want)
			}
		})
	}
}

func TestPool(t *testing.T) {
	sparse := func(net int) poolBlock { return poolBlock{network: net, targets: []avail{{0.6, 3}}} }
	dense := func(net int) poolBlock { return poolBlock{network: net, targets: []avail{{0.5, 20}}} }
	tests := []struct {
		name           string
		give           []poolBlock
		maxPool        int
		wantUnitOf     []int
		wantMeasurable []bool
	}{
		{"a dense block is its own unit", []poolBlock{dense(0)}, 256, []int{0}, []bool{true}},
		{
			// 3 hosts at 0.6 cannot be called down; 9 can (0.4^9*99 < 1/9).
			// The fourth block joins the pool of the first three.
			"four sparse blocks of a network pool into one unit",
			[]poolBlock{sparse(0), sparse(0), sparse(0), sparse(0)}, 256,
			[]int{0, 0, 0, 0}, []bool{true},
		},
		{
			"sparse blocks of different networks never pool",
			[]poolBlock{sparse(0), sparse(1)}, 256,
			[]int{0, 1}, []bool{false, false},
		},
		{
			"six sparse blocks make two pools",
			[]poolBlock{sparse(0), sparse(0), sparse(0), sparse(0), sparse(0), sparse(0)}, 256,
			[]int{0, 0, 0, 1, 1, 1}, []bool{true, true},
		},
		{
			"a dense block between sparse ones stays alone",
			[]poolBlock{
				{network: 0, targets: []avail{{0.9, 2}}},
				dense(0),
				{network: 0, targets: []avail{{0.9, 2}}},
			}, 256,
			[]int{1, 0, 1}, []bool{true, true},
		},
		{
			"a block where nothing answered is no unit",
			[]poolBlock{{network: 0}, dense(0)}, 256,
			[]int{-1, 0}, []bool{true},
		},
		{
			"pools stop at maxPool",
			[]poolBlock{
				{network: 0, targets: []avail{{0.3, 1}}},
				{network: 0, targets: []avail{{0.3, 1}}},
				{network: 0, targets: []avail{{0.3, 1}}},
			}, 2,
			[]int{0, 0, 1}, []bool{false, false},
		},
		{
			"a network that filters ICMP but has three TCP services",
			[]poolBlock{{network: 0, targets: []avail{{0.95, 1}, {0.95, 1}, {0.95, 1}}}}, 256,
			[]int{0}, []bool{true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			unitOf, measurable := pool(tt.give, tt.maxPool)
			if !slices.Equal(unitOf, tt.wantUnitOf) || !slices.Equal(measurable, tt.wantMeasurable) {
				t.Errorf("pool = %v %v, want %v %v", unitOf, measurable, tt.wantUnitOf, tt.wantMeasurable)
			}
		})
	}
}

func TestFollow(t *testing.T) {
	type step struct {
		recheck, changed bool
	}
	tests := []struct {
		name          string
		give          []State
		want          []step
		wantConfirmed State
	}{
		{"steady up", []State{Up, Up}, []step{{false, false}, {false, false}}, Up},
		{
			"a cut is re-checked once and confirmed",
			[]State{Down, Down, Down},
			[]step{{true, true}, {false, false}, {false, false}},
			Down,
		},
		{"a blip is re-checked and dropped", []State{Down, Up}, []step{{true, true}, {false, false}}, Up},
		{
			"uncertain is re-checked until the budget is spent",
			[]State{Uncertain, Uncertain, Uncertain, Uncertain},
			[]step{{true, true}, {true, false}, {true, false}, {false, false}},
			Up,
		},
		{
			"a decided verdict after giving up resets the budget",
			[]State{Uncertain, Uncertain, Uncertain, Uncertain, Up, Uncertain},
			[]step{{true, true}, {true, false}, {true, false}, {false, false}, {false, false}, {true, true}},
			Up,
		},
		{
			"down, uncertain, down, down",
			[]State{Down, Uncertain, Down, Down},
			[]step{{true, true}, {true, true}, {true, true}, {false, false}},
			Down,
		},
		{"unmeasurable units are never re-checked", []State{Unmeasurable, Up, Unmeasurable}, []step{{}, {}, {}}, Up},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := track{confirmed: Up}
			for i, v := range tt.give {
				var got step
				tr, got.recheck, got.changed = follow(tr, v, 3)
				if got != tt.want[i] {
					t.Errorf("verdict %d (%v): recheck, changed = %v, want %v", i, v, got, tt.want[i])
				}
			}
			if tr.confirmed != tt.wantConfirmed {
				t.Errorf("confirmed %v, want %v", tr.confirmed, tt.wantConfirmed)
			}
		})
	}
}

func TestDownBackoff(t *testing.T) {
	var got []time.Duration
	for step := 1; ; step++ {
		d, ok := downBackoff(30*time.Second, 11*time.Minute, step)
		if !ok {
			break
		}
		got = append(got, d)
	}
	want := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute}
	if !slices.Equal(got, want) {
		t.Fatalf("backoff %v, want %v", got, want)
	}
}

func TestVisitsPerRound(t *testing.T) {
	round := 11 * time.Minute
	tests := []struct {
		name         string
		countryUnits int
		blocks       int
		cost         float64
		fixed        float64
		sample       time.Duration
		budget       float64
		want         int
	}{
		{"a large country is visited once a round", 1000, 1, 1.04, 0, time.Minute, 15, 1},
		// Wants ceil(660/240) = 3 visits; 15/h buys 2.75 probes a round.
		{"four dense /24s: budget-bound", 4, 1, 1.04, 0, time.Minute, 15, 2},
		// A DNS server asked once a round leaves 18/h*(11/60) - 1 = 2.3.
		{"four dense /24s with a service each", 4, 1, 1.04, 1, time.Minute, 18, 2},
		{"a service the budget cannot carry twice", 4, 1, 1.04, 1, time.Minute, 15, 1},
		// One pooled unit of four blocks: wants 11; affords 15*4*(11/60)/2 = 5.
		{"a pooled country", 1, 4, 2, 0, time.Minute, 15, 5},
		{"extra visits off", 1, 4, 2, 0, -1, 15, 1},
		{"no budget", 1, 1, 1, 0, time.Minute, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := visitsPerRound(round, tt.sample, tt.countryUnits, tt.blocks, tt.cost, tt.fixed, tt.budget); got != tt.want {
				t.Errorf("visitsPerRound = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestCompactState guards the per-block memory budget: the scheduler keeps
// a block in 88 bytes (80 before A(b) was learned) and a unit in 56, so a
// million single-block units fit well under 256 bytes each with the visit
// order and heap.
func TestCompactState(t *testing.T) {
	if n := unsafe.Sizeof(block{}); n > 88 {
		t.Errorf("block is %d bytes, want at most 88", n)
	}
	if n := unsafe.Sizeof(unit{}); n > 56 {
		t.Errorf("unit is %d bytes, want at most 56", n)
	}
}

func TestEvidence(t *testing.T) {
	host := netip.MustParseAddr("198.19.0.10")
	router := netip.MustParseAddr("198.18.255.1")
	result := func(k prober.Kind, o prober.Outcome, responder netip.Addr) prober.Result {
		return prober.Result{Target: prober.Target{Kind: k, Addr: host}, Outcome: o, Responder: responder}
	}
	type want struct{ reached, proof, counts bool }
	tests := []struct {
		name string
		give prober.Result
		want want
	}{
		{"echo reply goes through Bayes", result(prober.KindICMP, prober.Reply, host), want{true, false, true}},
		{"TCP handshake proves reachability", result(prober.KindTCP, prober.Reply, host), want{true, true, true}},
		{"TCP reset proves reachability", result(prober.KindTCP, prober.Refused, host), want{true, true, true}},
		{"any DNS answer proves reachability", result(prober.KindDNS, prober.Reply, host), want{true, true, true}},
		{"DNS port unreachable from the server", result(prober.KindDNS, prober.Refused, host), want{true, true, true}},
		{"an error from the target itself", result(prober.KindDNS, prober.Unreachable, host), want{true, true, true}},
		{"unreachable from a router", result(prober.KindICMP, prober.Unreachable, router), want{false, false, true}},
		{"timeout", result(prober.KindTCP, prober.Timeout, netip.Addr{}), want{false, false, true}},
		{"a local error is no evidence", result(prober.KindICMP, prober.Error, netip.Addr{}), want{false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got want
			got.reached, got.proof, got.counts = evidence(tt.give)
			if got != tt.want {
				t.Errorf("evidence = %+v, want %+v", got, tt.want)
			}
		})
	}
}
