package sched

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober/sched/simnet"
)

func TestRateLearns(t *testing.T) {
	type visit struct{ probes, replies int }
	repeat := func(n int, vs ...visit) []visit {
		var out []visit
		for range n {
			out = append(out, vs...)
		}
		return out
	}
	tests := []struct {
		name   string
		start  rate
		visits []visit
		want   float64 // the rate p
	}{
		{"nothing seen keeps the census", rate{p: 0.7, n: 32}, nil, 0.7},
		{"a visit without probes changes nothing", rate{p: 0.7, n: 32}, repeat(50, visit{}), 0.7},
		{"converges down to the answer share", rate{p: 0.9, n: 32}, repeat(100, visit{5, 2}), 0.4},
		{"converges up to the answer share", rate{p: 0.1, n: 32}, repeat(200, visit{1, 1}, visit{3, 1}), 0.5},
		// Visits that stop at their first answer: one answer in 1, 2,
		// 3 and 4 probes is 4 answers in 10 probes, whatever the order.
		{"stopping at the first answer is no bias", rate{p: 0.9, n: 32},
			repeat(60, visit{1, 1}, visit{2, 1}, visit{3, 1}, visit{4, 1}), 0.4},
		{"old evidence fades", rate{p: 0.05, n: 1e6}, repeat(2000, visit{1, 1}), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.start
			for _, v := range tt.visits {
				r = r.add(v.probes, v.replies)
			}
			if math.Abs(float64(r.p)-tt.want) > 0.02 {
				t.Errorf("rate %.3f after %d visits, want %.3f", r.p, len(tt.visits), tt.want)
			}
			if r.n > learnWindow+MaxProbes {
				t.Errorf("weight %.1f probes, beyond the window of %d", r.n, learnWindow)
			}
		})
	}
}

func TestRateAvailStaysInBounds(t *testing.T) {
	tests := []struct {
		name string
		give rate
		want float32
	}{
		{"always answered", rate{p: 1, n: 64}, learnMax},
		{"never answered", rate{p: 0, n: 64}, learnMin},
		{"one standard error below the rate", rate{p: 0.5, n: 64}, 0.5 - 0.0625},
		{"fewer probes, more caution", rate{p: 0.5, n: 16}, 0.5 - 0.125},
		{"no weight at all", rate{p: 0.5}, learnMin},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.give.avail(); math.Abs(float64(got-tt.want)) > 1e-6 {
				t.Errorf("avail() = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestLearnAvail runs one block whose census got A(b) wrong (or right)
// and checks the A its visits use after two days: it moves to what the
// block's hosts really answer (a little below: see rate.avail), within
// [learnMin, learnMax], and the recovery probes follow it.
func TestLearnAvail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		census, truth float64 // truth: the share of E(b) that answers
		hosts         int
		lo, hi        float64
	}{
		{"census too high", 0.9, 0.4, 40, 0.3, 0.45},
		{"census too low", 0.2, 0.8, 40, 0.65, 0.85},
		{"census right", 0.6, 0.6, 40, 0.5, 0.65},
		{"hosts that always answer: at most learnMax", 0.5, 1, 20, 0.9, learnMax},
		// (A census far above a block that hardly answers makes its
		// visits call it down, and down visits teach nothing: only a
		// new census can correct that.)
		{"hosts that rarely answer: at least learnMin", 0.1, 0.03, 200, learnMin, 0.07},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(simnet.Options{Seed: 21})
			b := w.add("198.19.0.0/24", "198.19.0.0/24", "AA", hostRange(1, tt.hosts), tt.census,
				simnet.Block{Avail: tt.truth, Latency: 30 * time.Millisecond})
			s, _ := w.start(t, Config{})
			w.runUntil(s, epoch.Add(48*time.Hour))
			w.settle(s)
			got := float64(blockOf(s, b).avail)
			if got < tt.lo || got > tt.hi {
				t.Errorf("A(b) %.3f after 48 h (census %.2f, hosts answer %.2f), want within [%.2f, %.2f]",
					got, tt.census, tt.truth, tt.lo, tt.hi)
			}
			if u := s.unitOf(0); u.avail != blockOf(s, b).avail {
				t.Errorf("unit A %.3f, block A(b) %.3f: recovery probes would be sized on the census", u.avail, got)
			}
		})
	}
}

// TestOutageLeavesAAlone cuts a block for three hours, long enough for
// dozens of visits to find nothing, dense and sparse alike: A(b) must be
// exactly what it was when the cut began, and after the end too until a
// visit finds the block up again.
func TestOutageLeavesAAlone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		hosts int
		truth float64
	}{
		{"dense, reliable hosts: judged down at once", 60, 0.8},
		{"sparse, flaky hosts: uncertain before down", 20, 0.3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(simnet.Options{Seed: 22})
			b := w.add("198.19.0.0/24", "198.19.0.0/24", "AA", hostRange(1, tt.hosts), tt.truth,
				simnet.Block{Avail: tt.truth, Latency: 30 * time.Millisecond})
			s, rec := w.start(t, Config{})
			cut, restore := epoch.Add(6*time.Hour), epoch.Add(9*time.Hour)
			var atCut, atRestore float32
			w.at(cut, func() {
				atCut = blockOf(s, b).avail
				w.net.SetDown(b, true)
			})
			w.at(restore, func() {
				atRestore = blockOf(s, b).avail
				w.net.SetDown(b, false)
			})
			w.runUntil(s, restore.Add(time.Hour))
			w.settle(s)
			var down, silent int
			for _, v := range verdictsOf(rec.verdicts, b) {
				if v.Start.After(cut) && v.Time.Before(restore) {
					silent++
					if v.State == Down {
						down++
					}
				}
			}
			if silent < 20 || down == 0 {
				t.Fatalf("%d visits during the outage, %d of them down: the outage was not seen", silent, down)
			}
			if atRestore != atCut {
				t.Errorf("A(b) %.4f when the cut began, %.4f after %d silent visits", atCut, atRestore, silent)
			}
			if a := blockOf(s, b).avail; a < atCut-0.1 {
				t.Errorf("A(b) %.4f an hour after the outage, %.4f before it", a, atCut)
			}
		})
	}
}

func blockOf(s *Scheduler, p netip.Prefix) *block {
	for i := range s.blocks {
		if s.blocks[i].prefix() == p {
			return &s.blocks[i]
		}
	}
	panic("no block " + p.String())
}
