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
	ivs := intervals(tr)
	for i, iv := range ivs {
		if iv.From >= iv.To {
			t.Fatalf("%s: empty interval %d", what, i)
		}
		if i > 0 && ivs[i-1].To != iv.From {
			t.Fatalf("%s: gap or overlap between intervals %d and %d", what, i-1, i)
		}
	}
	if len(ivs) > 0 && ivs[len(ivs)-1].To != open {
		t.Fatalf("%s: last interval is not the open current state", what)
	}
}

// FuzzRun checks the invariants of every derived track on random worlds:
// times strictly increase, the state changes at every point, brackets are
// not inverted, and the intervals cover the time from the first evidence
// on without gaps or overlaps.
func FuzzRun(f *testing.F) {
	for _, s := range []uint64{1, 2, 3, 42, 1 << 40} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		out := Run(randomInput(seed))
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
