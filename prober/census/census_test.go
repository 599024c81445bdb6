package census_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/census"
	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/prober/sched/simnet"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func hostRange(from, n int) []uint8 {
	hs := make([]uint8, n)
	for i := range hs {
		hs[i] = uint8(from + i)
	}
	return hs
}

// kp is a small country in the lab's range: a /22 of four blocks and a
// lone /24, and a world of hosts behind them.
func kp(t *testing.T, opts simnet.Options) (*store.Store, *simnet.Net) {
	t.Helper()
	st := pgtest.New(t)
	_, err := st.ImportPrefixes(ctxT(t), store.Import{Country: "KP", Source: "test", Prefixes: []store.Prefix{
		{Prefix: pfx("198.19.0.0/22"), Registry: "apnic"},
		{Prefix: pfx("198.19.8.0/24"), Registry: "apnic"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 20 * time.Millisecond
	}
	net := simnet.New(opts)
	fast := time.Millisecond
	// Thirty always-on hosts, one a web server.
	net.Add(pfx("198.19.0.0/24"), simnet.Block{Hosts: hostRange(1, 30), Latency: fast, TCP: map[uint8][]uint16{5: {80}}})
	// Ten hosts that answer half the time.
	net.Add(pfx("198.19.1.0/24"), simnet.Block{Hosts: hostRange(10, 10), Avail: 0.5, Latency: fast})
	// A network that filters ICMP; two web servers on 443.
	net.Add(pfx("198.19.2.0/24"), simnet.Block{FilterICMP: true, Latency: fast, TCP: map[uint8][]uint16{7: {443}, 8: {443}}})
	// 198.19.3.0/24: nothing. 198.19.8.0/24: one host.
	net.Add(pfx("198.19.8.0/24"), simnet.Block{Hosts: []uint8{100}, Latency: fast})
	return st, net
}

func probers(net *simnet.Net) map[prober.Kind]prober.Prober {
	return map[prober.Kind]prober.Prober{prober.KindICMP: net, prober.KindTCP: net}
}

func value[T any](t *testing.T, st *store.Store, sql string, args ...any) T {
	t.Helper()
	var v T
	if err := st.Pool().QueryRow(ctxT(t), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func TestCensusFindsEAndA(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, net := kp(t, simnet.Options{Seed: 1})
	blocks, err := st.CensusBlocks(ctx, "KP")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var last, total int64
	cfg := census.Config{Rounds: 4, Ports: []uint16{80, 443}, Seed: 1, Progress: func(done, all int64) {
		mu.Lock()
		defer mu.Unlock()
		if done < last {
			t.Errorf("progress went back from %d to %d", last, done)
		}
		last, total = done, all
	}}
	c, err := census.Run(ctx, "KP", blocks, probers(net), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// 5 blocks of 254 host addresses, 4 rounds, ICMP and two ports.
	if want := int64(5 * 254 * 4 * 3); total != want || last != want || net.Sent(0) != want {
		t.Fatalf("progress %d of %d, sent %d; want %d", last, total, net.Sent(0), want)
	}
	if len(c.Blocks) != 5 || c.Rounds != 4 {
		t.Fatalf("census of %d blocks in %d rounds", len(c.Blocks), c.Rounds)
	}
	stats, err := st.SaveCensus(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Blocks != 5 || stats.Responsive != 4 {
		t.Fatalf("stats %+v", stats)
	}

	type row struct {
		ever  int
		avail *float32
	}
	get := func(block string) row {
		var r row
		if err := st.Pool().QueryRow(ctx, `SELECT ever_responsive, availability FROM blocks WHERE block = $1`, block).Scan(&r.ever, &r.avail); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := get("198.19.0.0/24"); r.ever != 30 || r.avail == nil || *r.avail != 1 {
		t.Errorf("always-on block: E %d, A %v; want 30, 1", r.ever, r.avail)
	}
	if r := get("198.19.1.0/24"); r.ever < 8 || r.avail == nil || *r.avail < 0.3 || *r.avail > 0.8 {
		t.Errorf("half-available block: E %d, A %v; want about 10, 0.5", r.ever, r.avail)
	}
	if r := get("198.19.2.0/24"); r.ever != 2 || r.avail != nil {
		t.Errorf("ICMP-filtered block: E %d, A %v; want 2 web servers and no ICMP availability", r.ever, r.avail)
	}
	if r := get("198.19.3.0/24"); r.ever != 0 || r.avail != nil {
		t.Errorf("silent block: E %d, A %v", r.ever, r.avail)
	}
	if n := value[int](t, st, `SELECT count(*) FROM targets WHERE origin = 'census' AND kind = 'tcp'`); n != 3 {
		t.Errorf("%d TCP census targets, want .0.5:80, .2.7:443, .2.8:443", n)
	}
	if n := value[int](t, st, `SELECT count(*) FROM targets WHERE host(addr) LIKE '%.0' OR host(addr) LIKE '%.255'`); n != 0 {
		t.Errorf("%d network or broadcast addresses became targets", n)
	}

	// A second run of two rounds refines A(b): every known target of the
	// blocks has six probes now, and A(b) is recomputed over all of them.
	before := get("198.19.1.0/24")
	c2, err := census.Run(ctx, "KP", blocks, probers(net), census.Config{Rounds: 2, Ports: []uint16{80, 443}, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SaveCensus(ctx, c2); err != nil {
		t.Fatal(err)
	}
	if n := value[int](t, st, `SELECT min(census_rounds) FROM blocks WHERE country = 'KP'`); n != 6 {
		t.Errorf("census_rounds %d after 4+2 rounds", n)
	}
	if n := value[int](t, st, `SELECT count(*) FROM targets WHERE origin = 'census' AND probes <> 6 AND block <> '198.19.1.0/24'`); n != 0 {
		t.Errorf("%d targets of always-answering blocks without 6 probes", n)
	}
	after := get("198.19.1.0/24")
	replies := value[int64](t, st, `SELECT sum(replies) FROM targets WHERE block = '198.19.1.0/24' AND kind = 'icmp'`)
	probes := value[int64](t, st, `SELECT sum(probes) FROM targets WHERE block = '198.19.1.0/24' AND kind = 'icmp'`)
	if want := float32(float64(replies) / float64(probes)); after.avail == nil || *after.avail != want {
		t.Errorf("A after the second run %v, want replies/probes = %v", after.avail, want)
	}
	t.Logf("half-available block: A %.3f after 4 rounds, %.3f after 6", *before.avail, *after.avail)
}

// TestCensusThenSchedule runs the whole path: census, store, plan,
// scheduler. The filtered network is judged up on its web servers.
func TestCensusThenSchedule(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, net := kp(t, simnet.Options{Seed: 3})
	blocks, err := st.CensusBlocks(ctx, "KP")
	if err != nil {
		t.Fatal(err)
	}
	c, err := census.Run(ctx, "KP", blocks, probers(net), census.Config{Rounds: 3, Ports: []uint16{443}, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SaveCensus(ctx, c); err != nil {
		t.Fatal(err)
	}
	plan, err := st.LoadPlan(ctx, "KP")
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Blocks) != 4 {
		t.Fatalf("plan of %d blocks, want the 4 where something answered", len(plan.Blocks))
	}
	var mu sync.Mutex
	verdicts := map[netip.Prefix]sched.Verdict{}
	sink := sinkFunc{verdict: func(v sched.Verdict) {
		mu.Lock()
		defer mu.Unlock()
		for _, b := range v.Blocks {
			verdicts[b] = v
		}
	}}
	s, err := sched.New(plan, probers(net), sink, sched.Config{Round: 200 * time.Millisecond, Timeout: 20 * time.Millisecond, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, b := range []string{"198.19.0.0/24", "198.19.1.0/24", "198.19.2.0/24", "198.19.8.0/24"} {
		v, ok := verdicts[pfx(b)]
		if !ok || v.State != sched.Up {
			t.Errorf("%s: %+v, want up", b, v)
		}
	}
	if v := verdicts[pfx("198.19.2.0/24")]; !v.Evidence.Has(prober.KindTCP) || v.Evidence.Has(prober.KindICMP) {
		t.Errorf("filtered block judged on %v, want TCP only", v.Evidence)
	}
}

type sinkFunc struct{ verdict func(sched.Verdict) }

func (sinkFunc) Result(sched.Result)       {}
func (f sinkFunc) Verdict(v sched.Verdict) { f.verdict(v) }

func TestCensusLeavesOutRefusedBlocks(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	refuse := func(tg prober.Target) error {
		if pfx("198.19.8.0/24").Contains(tg.Addr) {
			return fmt.Errorf("%w: opted out", prober.ErrRefused)
		}
		return nil
	}
	st, net := kp(t, simnet.Options{Seed: 4, Refuse: refuse})
	blocks, err := st.CensusBlocks(ctx, "KP")
	if err != nil {
		t.Fatal(err)
	}
	c, err := census.Run(ctx, "KP", blocks, probers(net), census.Config{Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range c.Blocks {
		if b == pfx("198.19.8.0/24") {
			t.Fatal("a refused block was reported as censused")
		}
	}
	for _, h := range c.Hosts {
		if pfx("198.19.8.0/24").Contains(h.Addr) {
			t.Fatalf("host %s of a refused block reported", h.Addr)
		}
	}
	if _, err := st.SaveCensus(ctx, c); err != nil {
		t.Fatal(err)
	}
	if n := value[int](t, st, `SELECT census_rounds FROM blocks WHERE block = '198.19.8.0/24'`); n != 0 {
		t.Fatalf("refused block has census_rounds %d", n)
	}
}

// TestCensusSkipsOptedOut opts out a whole block and part of another:
// not one probe reaches either prefix, the whole block is left out of the
// census, and the rest of the partly opted-out block is censused.
func TestCensusSkipsOptedOut(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	optOut := []netip.Prefix{pfx("198.19.8.0/24"), pfx("198.19.0.0/28")}
	var mu sync.Mutex
	var probed []prober.Target
	spy := func(tg prober.Target) error {
		mu.Lock()
		defer mu.Unlock()
		probed = append(probed, tg)
		return nil
	}
	st, net := kp(t, simnet.Options{Seed: 7, Refuse: spy})
	blocks, err := st.CensusBlocks(ctx, "KP")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	cfg := census.Config{Rounds: 2, Ports: []uint16{80}, OptOut: optOut, Seed: 7, Progress: func(_, all int64) { total = all }}
	c, err := census.Run(ctx, "KP", blocks, probers(net), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range probed {
		for _, o := range optOut {
			if o.Contains(tg.Addr) {
				t.Fatalf("%s probed, though %s is opted out", tg, o)
			}
		}
	}
	// Four blocks of 254 host addresses less .1–.15 of the first, two
	// rounds, ICMP and one port.
	if want := int64((4*254 - 15) * 2 * 2); int64(len(probed)) != want || total != want {
		t.Errorf("%d probes sent, progress total %d; want %d", len(probed), total, want)
	}
	want := []netip.Prefix{pfx("198.19.0.0/24"), pfx("198.19.1.0/24"), pfx("198.19.2.0/24"), pfx("198.19.3.0/24")}
	if !slices.Equal(c.Blocks, want) {
		t.Errorf("censused %v, want %v", c.Blocks, want)
	}
	icmp := 0
	for _, h := range c.Hosts {
		if pfx("198.19.0.0/24").Contains(h.Addr) && h.Kind == "icmp" {
			icmp++
		}
	}
	if icmp != 15 {
		t.Errorf("%d ICMP hosts in 198.19.0.0/24, want .16–.30", icmp)
	}
	if _, err := st.SaveCensus(ctx, c); err != nil {
		t.Fatal(err)
	}
	if n := value[int](t, st, `SELECT census_rounds FROM blocks WHERE block = '198.19.8.0/24'`); n != 0 {
		t.Errorf("opted-out block has census_rounds %d", n)
	}
	if n := value[int](t, st, `SELECT count(*) FROM targets WHERE addr <<= '198.19.0.0/28' OR addr <<= '198.19.8.0/24'`); n != 0 {
		t.Errorf("%d targets in opted-out space", n)
	}
}

func TestOptedOut(t *testing.T) {
	t.Parallel()
	ps := func(ss ...string) []netip.Prefix {
		out := make([]netip.Prefix, len(ss))
		for i, s := range ss {
			out[i] = pfx(s)
		}
		return out
	}
	tests := []struct {
		name   string
		block  string
		optOut []netip.Prefix
		want   bool
	}{
		{"no list", "198.19.0.0/24", nil, false},
		{"inside a larger prefix", "198.19.1.0/24", ps("198.19.0.0/16"), true},
		{"the block itself", "198.19.1.0/24", ps("198.19.1.0/24"), true},
		{"half", "198.19.1.0/24", ps("198.19.1.0/25"), false},
		{"two halves", "198.19.1.0/24", ps("198.19.1.0/25", "198.19.1.128/25"), true},
		{"all but the broadcast address, which is never probed", "198.19.1.0/24",
			ps("198.19.1.0/25", "198.19.1.128/26", "198.19.1.192/27", "198.19.1.224/28", "198.19.1.240/29",
				"198.19.1.248/30", "198.19.1.252/31", "198.19.1.254/32"), true},
		{"all but one host", "198.19.1.0/24", ps("198.19.1.0/25", "198.19.1.128/26", "198.19.1.192/27", "198.19.1.224/28",
			"198.19.1.240/29", "198.19.1.248/30", "198.19.1.252/31"), false},
		{"another block", "198.19.1.0/24", ps("198.19.2.0/24"), false},
		{"a longer block, covered", "198.19.1.64/26", ps("198.19.1.0/25"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := census.OptedOut(pfx(tt.block), tt.optOut); got != tt.want {
				t.Errorf("OptedOut(%s, %v) = %v, want %v", tt.block, tt.optOut, got, tt.want)
			}
		})
	}
}

func TestCensusStopsWithItsContext(t *testing.T) {
	t.Parallel()
	_, net := kp(t, simnet.Options{Seed: 5, Timeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	begin := time.Now()
	c, err := census.Run(ctx, "KP", []netip.Prefix{pfx("198.19.3.0/24")}, probers(net),
		census.Config{Rounds: 100, Interval: time.Hour, MaxInFlight: 8})
	if !errors.Is(err, context.DeadlineExceeded) || len(c.Blocks) != 0 {
		t.Fatalf("census = %d blocks, %v; want none and the context's error", len(c.Blocks), err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Fatalf("census took %v to stop", d)
	}
}

func TestCensusSpreadsEachBlock(t *testing.T) {
	t.Parallel()
	// Record the order in which addresses are probed: in any stretch of
	// 50 probes across 5 blocks, no block gets more than 20.
	var mu sync.Mutex
	var order []netip.Addr
	spy := func(tg prober.Target) error {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, tg.Addr)
		return nil
	}
	_, net := kp(t, simnet.Options{Seed: 6, Refuse: spy})
	blocks := []netip.Prefix{pfx("198.19.0.0/24"), pfx("198.19.1.0/24"), pfx("198.19.2.0/24"), pfx("198.19.3.0/24"), pfx("198.19.8.0/24")}
	if _, err := census.Run(ctxT(t), "KP", blocks, probers(net), census.Config{Seed: 6}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i+50 <= len(order); i += 50 {
		per := map[netip.Prefix]int{}
		for _, a := range order[i : i+50] {
			b, _ := a.Prefix(24)
			per[b]++
			if per[b] > 20 {
				t.Fatalf("%d of 50 consecutive probes went to %s: a burst", per[b], b)
			}
		}
	}
}
