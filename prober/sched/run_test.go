package sched

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched/simnet"
	"github.com/cutoffnet/cutoff/store"
)

// FuzzExactlyOnce checks the scheduler's bookkeeping whatever the
// network does: every probe an engine accepted yields exactly one result
// at the sink, each visit exactly one verdict, and a unit's results all
// come before its verdict (the recorder checks that as they arrive).
func FuzzExactlyOnce(f *testing.F) {
	f.Add(uint64(1), uint8(5), false, uint8(0), uint8(0), uint8(3))
	f.Add(uint64(2), uint8(30), true, uint8(3), uint8(20), uint8(1))
	f.Add(uint64(3), uint8(1), true, uint8(1), uint8(90), uint8(7))
	f.Add(uint64(4), uint8(12), false, uint8(5), uint8(50), uint8(0))
	f.Fuzz(func(t *testing.T, seed uint64, nblocks uint8, inline bool, refuseEvery uint8, loss uint8, cuts uint8) {
		var mu sync.Mutex
		calls := 0
		refuse := func(prober.Target) error {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if refuseEvery > 0 && calls%int(refuseEvery%8+1) == 0 {
				return fmt.Errorf("%w: fuzz", prober.ErrRefused)
			}
			return nil
		}
		w := newWorld(simnet.Options{Seed: seed, Timeout: time.Second, Inline: inline, Refuse: refuse})
		n := int(nblocks%40) + 1
		for i := range n {
			hosts := hostRange(1, 1+int(seed>>uint(i%60))%40)
			b := fmt.Sprintf("198.18.%d.0/24", i)
			sim := simnet.Block{Loss: float64(loss%100) / 100, Avail: 0.5 + float64(i%5)/10}
			if i%7 == 3 {
				sim.TCP = map[uint8][]uint16{hosts[0]: {80}}
				w.service("tcp", netip.AddrFrom4([4]byte{198, 18, byte(i), hosts[0]}).String(), 80, "manual", 0, 0)
			}
			w.add(b, fmt.Sprintf("198.18.%d.0/22", i&^3), "KP", hosts, 0.7, sim)
		}
		w.control("198.19.255.1")
		for c := range int(cuts % 8) {
			b := pfx(fmt.Sprintf("198.18.%d.0/24", (int(seed)+c)%n))
			at := epoch.Add(time.Duration(c+1) * 97 * time.Second)
			w.at(at, func() { w.net.SetDown(b, true) })
			w.at(at.Add(3*time.Minute), func() { w.net.SetDown(b, false) })
		}
		s, rec := w.start(t, Config{Round: 2 * time.Minute, Recheck: 10 * time.Second, MinInterval: 2 * time.Second, Seed: seed | 1})
		w.runUntil(s, epoch.Add(20*time.Minute))
		w.settle(s)
		checkAccounting(t, s, rec, w.net.Sent(0))
	})
}

func TestRunInRealTime(t *testing.T) {
	t.Parallel()
	net := simnet.New(simnet.Options{Timeout: 30 * time.Millisecond, Seed: 1})
	var plan store.Plan
	for i := range 20 {
		b := netip.MustParsePrefix(fmt.Sprintf("198.18.%d.0/24", i))
		net.Add(b, simnet.Block{Hosts: hostRange(1, 20), Latency: time.Millisecond})
		pb := store.PlanBlock{Block: b, Network: b, Country: "KP", Availability: 1}
		for h := 1; h <= 20; h++ {
			pb.Hosts = append(pb.Hosts, store.PlanHost{Addr: netip.AddrFrom4([4]byte{198, 18, byte(i), byte(h)}), Answered: true})
		}
		plan.Blocks = append(plan.Blocks, pb)
	}
	rec := &lockedRecorder{r: newRecorder(t)}
	probers := map[prober.Kind]prober.Prober{prober.KindICMP: net}
	s, err := New(&plan, probers, rec, Config{Round: 500 * time.Millisecond, Timeout: 30 * time.Millisecond, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1600*time.Millisecond)
	defer cancel()
	begin := time.Now()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("Run returned %v after it started, %v after its context ended", d, d-1600*time.Millisecond)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	checkAccounting(t, s, rec.r, net.Sent(0))
	visited := map[netip.Prefix]int{}
	for _, v := range rec.r.verdicts {
		if v.State != Up {
			t.Errorf("verdict %+v, want up", v)
		}
		visited[v.Unit]++
	}
	for _, b := range plan.Blocks {
		if visited[b.Block] < 2 {
			t.Errorf("%s visited %d times in three rounds", b.Block, visited[b.Block])
		}
	}
}

func TestRunOnce(t *testing.T) {
	t.Parallel()
	net := simnet.New(simnet.Options{Timeout: 30 * time.Millisecond, Seed: 1})
	var plan store.Plan
	for i := range 10 {
		b := netip.MustParsePrefix(fmt.Sprintf("198.18.%d.0/24", i))
		net.Add(b, simnet.Block{Hosts: hostRange(1, 20), Latency: time.Millisecond, Down: i == 3})
		pb := store.PlanBlock{Block: b, Network: b, Country: "KP", Availability: 1}
		for h := 1; h <= 20; h++ {
			pb.Hosts = append(pb.Hosts, store.PlanHost{Addr: netip.AddrFrom4([4]byte{198, 18, byte(i), byte(h)}), Answered: true})
		}
		plan.Blocks = append(plan.Blocks, pb)
	}
	net.Add(netip.MustParsePrefix("198.19.0.0/24"), simnet.Block{Hosts: []uint8{1}})
	plan.Controls = []store.PlanTarget{{Kind: "icmp", Addr: netip.MustParseAddr("198.19.0.1")}}
	rec := &lockedRecorder{r: newRecorder(t)}
	probers := map[prober.Kind]prober.Prober{prober.KindICMP: net}
	s, err := New(&plan, probers, rec, Config{Round: 300 * time.Millisecond, Timeout: 30 * time.Millisecond, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := s.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("RunOnce took %v for a 300ms round", d)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	checkAccounting(t, s, rec.r, net.Sent(0))
	regular := map[netip.Prefix]State{}
	for _, v := range rec.r.verdicts {
		if v.Why == Regular {
			if _, dup := regular[v.Unit]; dup {
				t.Errorf("%s visited twice as a regular visit", v.Unit)
			}
			regular[v.Unit] = v.State
		}
	}
	for i, b := range plan.Blocks {
		want := Up
		if i == 3 {
			want = Down
		}
		if regular[b.Block] != want {
			t.Errorf("%s: %v, want %v", b.Block, regular[b.Block], want)
		}
	}
	controls := 0
	for _, r := range rec.r.results {
		if r.Control {
			controls++
		}
	}
	if controls < 1 {
		t.Error("the control target was not probed")
	}

	// A cancelled context ends RunOnce with its error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.RunOnce(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("RunOnce with a cancelled context: %v", err)
	}
}

// lockedRecorder guards a recorder for tests where the scheduler runs on
// another goroutine than the test's checks.
type lockedRecorder struct {
	mu sync.Mutex
	r  *recorder
}

func (l *lockedRecorder) Result(x Result) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.r.Result(x)
}

func (l *lockedRecorder) Verdict(v Verdict) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.r.Verdict(v)
}

// TestCarry checks that a scheduler built from a refreshed plan keeps what
// the old one learned: a unit known to be down stays down without a new
// round of re-checks, and history carries over.
func TestCarry(t *testing.T) {
	t.Parallel()
	w := newWorld(simnet.Options{Seed: 8})
	blocks := labCountry(w)
	s1, _ := w.start(t, Config{})
	cut := epoch.Add(30 * time.Minute)
	w.at(cut, func() { w.net.SetDown(blocks[0], true) })
	w.runUntil(s1, cut.Add(20*time.Minute))
	w.settle(s1)
	var down1 *unit
	for i := range s1.units {
		if s1.blocks[s1.units[i].block0].prefix() == blocks[0] {
			down1 = &s1.units[i]
		}
	}
	if down1 == nil || down1.track.confirmed != Down {
		t.Fatalf("the cut block is not confirmed down before the refresh: %+v", down1)
	}
	// A block's history: clear one address's bit, as if it had gone
	// silent; and a learned A(b) no census gave.
	for i := range s1.blocks {
		s1.blocks[i].hot.clear(10)
		s1.blocks[i].learn = rate{p: 0.6, n: 40}
		s1.blocks[i].avail = s1.blocks[i].learn.avail()
	}

	// The refreshed plan adds a block, and a new census changed A(b) of
	// another; the old ones carry over.
	w.add("198.19.9.0/24", "198.19.9.0/24", "KP", hostRange(10, 30), 1, simnet.Block{})
	for i := range w.plan.Blocks {
		if w.plan.Blocks[i].Block == blocks[1] {
			w.plan.Blocks[i].Availability = 0.3
		}
	}
	s2, rec := w.start(t, Config{})
	s2.Carry(s1)
	for i := range s2.units {
		u := &s2.units[i]
		key := s2.blocks[u.block0].prefix()
		switch {
		case key == blocks[0]:
			if u.track.confirmed != Down || u.belief >= downBelow {
				t.Errorf("%s: confirmed %v belief %v after Carry, want down", key, u.track.confirmed, u.belief)
			}
		case key == pfx("198.19.9.0/24"):
			if u.track.confirmed != Up || u.belief != beliefStart || s2.blocks[u.block0].hot.count() != 30 {
				t.Errorf("new block %s did not start fresh: %+v", key, u)
			}
		case key == blocks[1]:
			if b := &s2.blocks[u.block0]; b.avail != 0.3 || b.learn.p != 0.3 {
				t.Errorf("%s: A(b) %v (learned %v) after a new census said 0.3", key, b.avail, b.learn.p)
			}
		default:
			if s2.blocks[u.block0].hot.has(10) {
				t.Errorf("%s: history of .10 not carried", key)
			}
			if b := &s2.blocks[u.block0]; b.learn != (rate{p: 0.6, n: 40}) || u.avail != b.avail || b.avail == b.plan {
				t.Errorf("%s: learned A(b) not carried: %+v, unit A %v", key, b, u.avail)
			}
		}
	}
	// Its next visits keep calling the cut block down in recovery mode,
	// with no first-sighting re-check.
	w.runUntil(s2, w.clk.Now().Add(15*time.Minute))
	vs := verdictsOf(rec.verdicts, blocks[0])
	if len(vs) == 0 {
		t.Fatal("the cut block was not visited after the refresh")
	}
	for _, v := range vs {
		if v.State != Down || v.Why == Recheck {
			t.Errorf("after Carry: %v on a %v visit, want down without re-checks", v.State, v.Why)
		}
	}
}
