package sched

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched/simnet"
	"github.com/cutoffnet/cutoff/store"
)

// epoch is the start of every simulation: a round boundary plus an
// awkward offset, so nothing lines up by accident.
var epoch = time.Date(2014, 12, 22, 12, 0, 0, 0, time.UTC).Add(137 * time.Second)

// world is a simulated internet and the plan a census of it would give.
type world struct {
	clk  *simnet.Clock
	net  *simnet.Net
	plan store.Plan
}

func newWorld(opts simnet.Options) *world {
	w := &world{clk: simnet.NewClock(epoch)}
	opts.Clock = w.clk
	w.net = simnet.New(opts)
	return w
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func hostRange(from, n int) []uint8 {
	hs := make([]uint8, n)
	for i := range hs {
		hs[i] = uint8(from + i)
	}
	return hs
}

// add puts a block in the world and in the plan, as a census that found
// its hosts answering with availability a would record it.
func (w *world) add(block, network, country string, hosts []uint8, a float64, sim simnet.Block) netip.Prefix {
	p := pfx(block)
	if sim.Hosts == nil {
		sim.Hosts = hosts
	}
	w.net.Add(p, sim)
	b := store.PlanBlock{Block: p, Network: pfx(network), Country: country, Availability: a, CensusRounds: 3}
	base := p.Addr().As4()
	for _, h := range hosts {
		base[3] = h
		b.Hosts = append(b.Hosts, store.PlanHost{Addr: netip.AddrFrom4(base), Probes: 3, Replies: 3, Answered: true})
	}
	w.plan.Blocks = append(w.plan.Blocks, b)
	return p
}

func (w *world) service(kind, addr string, port uint16, origin string, probes, replies int32) {
	a := netip.MustParseAddr(addr)
	w.plan.Services = append(w.plan.Services, store.PlanTarget{
		Kind: kind, Addr: a, Port: port, Qname: map[bool]string{true: "kp.", false: ""}[kind == "dns"],
		Block: netip.PrefixFrom(a, 24).Masked(), Origin: origin, Probes: probes, Replies: replies, Answered: replies > 0,
	})
}

func (w *world) control(addr string) {
	a := netip.MustParseAddr(addr)
	w.net.Add(netip.PrefixFrom(a, 24).Masked(), simnet.Block{Hosts: []uint8{a.As4()[3]}})
	w.plan.Controls = append(w.plan.Controls, store.PlanTarget{Kind: "icmp", Addr: a, Origin: "manual"})
}

func (w *world) probers() map[prober.Kind]prober.Prober {
	return map[prober.Kind]prober.Prober{prober.KindICMP: w.net, prober.KindTCP: w.net, prober.KindDNS: w.net}
}

// recorder is a Sink that keeps everything, and checks as it goes that a
// unit's results all come before its visit's verdict.
type recorder struct {
	t        testing.TB
	results  []Result
	verdicts []Verdict
	open     map[netip.Prefix]int // results since the unit's last verdict
}

func newRecorder(t testing.TB) *recorder {
	return &recorder{t: t, open: map[netip.Prefix]int{}}
}

func (r *recorder) Result(x Result) {
	r.results = append(r.results, x)
	if !x.Control {
		r.open[x.Unit]++
	}
}

func (r *recorder) Verdict(v Verdict) {
	if got := r.open[v.Unit]; got != v.Probes {
		r.t.Errorf("verdict for %s (%v at %v) says %d probes, the sink got %d results", v.Unit, v.State, v.Time, v.Probes, got)
	}
	r.open[v.Unit] = 0
	r.verdicts = append(r.verdicts, v)
}

// start builds a scheduler over w with the virtual clock.
func (w *world) start(t testing.TB, cfg Config) (*Scheduler, *recorder) {
	t.Helper()
	rec := newRecorder(t)
	cfg.Now = w.clk.Now
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	s, err := New(&w.plan, w.probers(), rec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, rec
}

// runUntil simulates until virtual time t.
func (w *world) runUntil(s *Scheduler, t time.Time) {
	simnet.Run(context.Background(), w.clk, s, t)
}

// settle stops s from starting anything new and lets every probe in
// flight come back.
func (w *world) settle(s *Scheduler) {
	s.stopping = true
	for s.drain(context.Background()); s.inflight > 0; s.drain(context.Background()) {
		t, ok := w.clk.Next()
		if !ok {
			panic("probes in flight but nothing scheduled to deliver them")
		}
		w.clk.AdvanceTo(t)
	}
}

// at schedules f at virtual time t.
func (w *world) at(t time.Time, f func()) { w.clk.AfterFunc(t.Sub(w.clk.Now()), f) }

func verdictsOf(vs []Verdict, unit netip.Prefix) []Verdict {
	var out []Verdict
	for _, v := range vs {
		if v.Unit == unit {
			out = append(out, v)
		}
	}
	return out
}

// checkAccounting asserts that every probe sent produced exactly one
// result at the sink and every visit exactly one verdict.
func checkAccounting(t testing.TB, s *Scheduler, rec *recorder, sent int64) {
	t.Helper()
	st := s.Stats()
	if st.Sent != sent || st.Results != sent || int64(len(rec.results)) != sent {
		t.Errorf("sent %d (scheduler says %d), results %d (sink got %d)", sent, st.Sent, st.Results, len(rec.results))
	}
	var visits int64
	for _, n := range st.Visits {
		visits += n
	}
	if visits != int64(len(rec.verdicts)) || st.Verdicts != visits {
		t.Errorf("%d visits, %d verdicts (sink got %d)", visits, st.Verdicts, len(rec.verdicts))
	}
	probes := 0
	for _, v := range rec.verdicts {
		probes += v.Probes
	}
	controls := 0
	for _, r := range rec.results {
		if r.Control {
			controls++
		}
	}
	if probes+controls != len(rec.results) {
		t.Errorf("verdicts account for %d probes and controls %d, but %d results came", probes, controls, len(rec.results))
	}
	for u, n := range rec.open {
		if n != 0 {
			t.Errorf("unit %s: %d results without a verdict", u, n)
		}
	}
}
