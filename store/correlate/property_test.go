package correlate

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// randomInput builds a small random world from a seed: blocks in two
// countries, two vantages with verdicts at jittered rounds, some control
// results failing.
func randomInput(seed uint64) *Input {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	in := &Input{Obs: map[int]map[int][]Obs{}, Controls: map[int][]Control{}, Mass: MassFailure{Share: 0.5, MinOthers: 2}}
	nb := 2 + rng.IntN(5)
	for b := range nb {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(b), 0}), 24)
		in.Blocks = append(in.Blocks, Block{Prefix: p, Network: p, Country: []string{"XA", "XB"}[b%2]})
	}
	round := int64(10 + rng.IntN(50))
	for v := range 2 {
		in.Vantages = append(in.Vantages, Vantage{Fresh: 2 * round * sec, Timeout: sec})
		in.Obs[v] = map[int][]Obs{}
		for b := range nb {
			t := int64(rng.IntN(int(round))) * sec
			for range 5 + rng.IntN(30) {
				t += round*sec + int64(rng.IntN(int(round)))*sec/4 - round*sec/8
				if rng.IntN(10) == 0 {
					t += 3 * round * sec // a gap: the evidence goes stale
				}
				s := Up
				if rng.IntN(3) == 0 {
					s = Down
				}
				in.Obs[v][b] = append(in.Obs[v][b], Obs{At: t, Sent: t - sec/2, State: s})
				in.Horizon = max(in.Horizon, t)
			}
		}
		t := int64(0)
		for range 20 {
			t += round * sec
			in.Controls[v] = append(in.Controls[v], Control{Sent: t, Reached: rng.IntN(6) != 0})
		}
	}
	return in
}

func checkTrack(t *testing.T, what string, tr track) {
	t.Helper()
	for i, p := range tr {
		if p.Informative && p.E > p.L {
			t.Fatalf("%s: point %d bracket [%d, %d] inverted", what, i, p.E, p.L)
		}
		if i == 0 {
			continue
		}
		if p.T <= tr[i-1].T {
			t.Fatalf("%s: point %d at %d not after %d", what, i, p.T, tr[i-1].T)
		}
		if p.State == tr[i-1].State {
			t.Fatalf("%s: point %d repeats state %s", what, i, p.State)
		}
	}
}

// checkSupport checks that every up or down interval of a block rests on
// evidence, and that a block is never down while a vantage reached it:
// an interval in a state needs a verdict in that state, on that block,
// from a vantage whose evidence was not set aside then, made near the
// interval; and no such vantage may have reached the block well inside a
// down interval. Near and well inside allow for a state holding until
// its evidence goes stale and for changes being placed inside their
// brackets: two freshness periods and a timeout.
func checkSupport(t *testing.T, in *Input, out *Output) {
	t.Helper()
	var slack int64
	for _, v := range in.Vantages {
		slack = max(slack, 2*v.Fresh+v.Timeout)
	}
	setAside := func(v int, at int64) bool {
		st, _ := out.Health[v].Track.at(at)
		return st == Down
	}
	for b, tr := range out.Blocks {
		for i, p := range tr {
			if p.State != Up && p.State != Down {
				continue
			}
			end := in.Horizon
			if i+1 < len(tr) {
				end = tr[i+1].T
			}
			supported := false
			for v, byBlock := range in.Obs {
				for _, o := range byBlock[b] {
					first, _ := o.evidence(in.Vantages[v].Timeout)
					if setAside(v, first) {
						continue
					}
					if o.State == p.State && o.At >= p.T-slack && o.At <= end+slack {
						supported = true
					}
					if p.State == Down && o.State == Up && o.At > p.T+slack && o.At < end-slack {
						t.Fatalf("block %d: down from %d to %d, but vantage %d reached it at %d", b, p.T, end, v, o.At)
					}
				}
			}
			if !supported {
				t.Fatalf("block %d: %s from %d rests on no %s verdict of a vantage not set aside", b, p.State, p.T, p.State)
			}
		}
	}
}

// FuzzRun checks the invariants of every derived track on random worlds:
// times strictly increase, the state changes at every point, brackets are
// not inverted, and every up or down block rests on a verdict of a
// vantage that was not set aside.
func FuzzRun(f *testing.F) {
	for _, s := range []uint64{1, 2, 3, 42, 1 << 40} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		in := randomInput(seed)
		out := Run(in)
		checkSupport(t, in, out)
		for b, tr := range out.Blocks {
			checkTrack(t, "block "+netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(b), 0}), 24).String(), tr)
		}
		for n, tr := range out.Networks {
			checkTrack(t, "network "+n.String(), tr)
		}
		for c, tr := range out.Countries {
			checkTrack(t, "country "+c, tr)
		}
		for v, h := range out.Health {
			checkTrack(t, "health", h.Track)
			_ = v
		}
	})
}

// TestRunDeterministic: the same input gives the same output, whatever
// the map iteration order.
func TestRunDeterministic(t *testing.T) {
	for seed := range uint64(50) {
		a, b := Run(randomInput(seed)), Run(randomInput(seed))
		for k, tr := range a.Countries {
			if len(tr) != len(b.Countries[k]) {
				t.Fatalf("seed %d: country %s differs between runs", seed, k)
			}
			for i := range tr {
				if tr[i] != b.Countries[k][i] {
					t.Fatalf("seed %d: country %s point %d differs: %+v vs %+v", seed, k, i, tr[i], b.Countries[k][i])
				}
			}
		}
	}
}
