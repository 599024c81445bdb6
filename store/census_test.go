package store_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

// importKP watches a small country: one /22 of four blocks and a /24.
func importKP(t *testing.T, st *store.Store) {
	t.Helper()
	_, err := st.ImportPrefixes(ctxT(t), store.Import{Country: "KP", Name: "North Korea", Source: "test", Prefixes: []store.Prefix{
		{Prefix: netip.MustParsePrefix("198.19.0.0/22"), Registry: "apnic"},
		{Prefix: netip.MustParsePrefix("198.19.8.0/24"), Registry: "apnic"},
	}})
	if err != nil {
		t.Fatal(err)
	}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestCensusBlocks(t *testing.T) {
	t.Parallel()
	st := pgtest.New(t)
	importKP(t, st)
	bs, err := st.CensusBlocks(ctxT(t), "KP")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("198.19.0.0/24"), netip.MustParsePrefix("198.19.1.0/24"),
		netip.MustParsePrefix("198.19.2.0/24"), netip.MustParsePrefix("198.19.3.0/24"),
		netip.MustParsePrefix("198.19.8.0/24"),
	}
	if !slices.Equal(bs, want) {
		t.Fatalf("blocks %v, want %v", bs, want)
	}
	for _, cc := range []string{"kp", "K1", "ZZ"} {
		if _, err := st.CensusBlocks(ctxT(t), cc); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("CensusBlocks(%q): %v, want an invalid-input error", cc, err)
		}
	}
}

func TestSaveCensusRefines(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	importKP(t, st)
	blocks, err := st.CensusBlocks(ctx, "KP")
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Date(2014, 12, 20, 10, 0, 0, 0, time.UTC)
	// First run, 2 rounds: .1 answered both, .2 once, TCP 80 on .1 both.
	stats, err := st.SaveCensus(ctx, store.Census{
		Country: "KP", Started: t1, Rounds: 2, Ports: []uint16{80}, Blocks: blocks,
		Hosts: []store.CensusHost{
			{Kind: "icmp", Addr: addr("198.19.0.1"), Replies: 2, LastReply: t1.Add(time.Minute)},
			{Kind: "icmp", Addr: addr("198.19.0.2"), Replies: 1, LastReply: t1},
			{Kind: "tcp", Addr: addr("198.19.0.1"), Port: 80, Replies: 2, LastReply: t1.Add(time.Minute)},
			{Kind: "icmp", Addr: addr("198.19.8.9"), Replies: 2, LastReply: t1.Add(time.Minute)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := (store.CensusStats{Blocks: 5, Responsive: 2, New: 4}); stats != want {
		t.Fatalf("stats %+v, want %+v", stats, want)
	}
	checkBlock(t, st, "198.19.0.0/24", 2, 0.75, 2) // 3 of 4 probes to E(b)'s ICMP addresses answered
	checkBlock(t, st, "198.19.8.0/24", 1, 1, 2)
	checkBlock(t, st, "198.19.1.0/24", 0, -1, 2)

	// Second run, 1 round: .1 silent, .2 answered, .3 new; TCP 80 and 443 probed.
	t2 := t1.Add(24 * time.Hour)
	stats, err = st.SaveCensus(ctx, store.Census{
		Country: "KP", Started: t2, Rounds: 1, Ports: []uint16{80, 443}, Blocks: blocks[:1],
		Hosts: []store.CensusHost{
			{Kind: "icmp", Addr: addr("198.19.0.2"), Replies: 1, LastReply: t2},
			{Kind: "icmp", Addr: addr("198.19.0.3"), Replies: 1, LastReply: t2},
			{Kind: "tcp", Addr: addr("198.19.0.1"), Port: 443, Replies: 1, LastReply: t2},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := (store.CensusStats{Blocks: 1, Responsive: 1, New: 2, Updated: 1}); stats != want {
		t.Fatalf("second stats %+v, want %+v", stats, want)
	}
	// ICMP: .1 2/3, .2 2/3, .3 1/1: 5 of 7.
	checkBlock(t, st, "198.19.0.0/24", 3, 5.0/7, 3)
	checkTarget(t, st, "icmp", "198.19.0.1", 0, 3, 2)
	checkTarget(t, st, "tcp", "198.19.0.1", 80, 3, 2)
	checkTarget(t, st, "tcp", "198.19.0.1", 443, 1, 1)

	// The plan carries E(b), A(b) and the history; .1 did not answer in
	// the latest run, so it is no longer the first choice.
	plan, err := st.LoadPlan(ctx, "KP")
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Blocks) != 2 {
		t.Fatalf("plan blocks %+v, want the two responsive blocks", plan.Blocks)
	}
	b := plan.Blocks[0]
	if b.Block != netip.MustParsePrefix("198.19.0.0/24") || b.Network != netip.MustParsePrefix("198.19.0.0/22") ||
		b.Country != "KP" || b.CensusRounds != 3 || !b.CensusedAt.Equal(t2) {
		t.Fatalf("plan block %+v", b)
	}
	if got := float64(b.Availability); got < 5.0/7-1e-6 || got > 5.0/7+1e-6 {
		t.Fatalf("availability %v, want 5/7", got)
	}
	wantHosts := []store.PlanHost{
		{Addr: addr("198.19.0.1"), Probes: 3, Replies: 2, Answered: false},
		{Addr: addr("198.19.0.2"), Probes: 3, Replies: 2, Answered: true},
		{Addr: addr("198.19.0.3"), Probes: 1, Replies: 1, Answered: true},
	}
	if !slices.Equal(b.Hosts, wantHosts) {
		t.Fatalf("hosts %+v, want %+v", b.Hosts, wantHosts)
	}
	if len(plan.Services) != 2 || plan.Services[0].Port != 80 || plan.Services[0].Origin != "census" || plan.Services[0].Answered {
		t.Fatalf("services %+v", plan.Services)
	}
}

func TestSaveCensusRejects(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	importKP(t, st)
	start := time.Date(2014, 12, 20, 10, 0, 0, 0, time.UTC)
	block := netip.MustParsePrefix("198.19.0.0/24")
	tests := []struct {
		name string
		give store.Census
	}{
		{"bad country", store.Census{Country: "kp", Started: start, Rounds: 1, Blocks: []netip.Prefix{block}}},
		{"no rounds", store.Census{Country: "KP", Started: start, Blocks: []netip.Prefix{block}}},
		{"no blocks", store.Census{Country: "KP", Started: start, Rounds: 1}},
		{"block of another country", store.Census{Country: "KP", Started: start, Rounds: 1, Blocks: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}}},
		{"host outside the blocks", store.Census{Country: "KP", Started: start, Rounds: 1, Blocks: []netip.Prefix{block},
			Hosts: []store.CensusHost{{Kind: "icmp", Addr: addr("198.19.1.1"), Replies: 1}}}},
		{"more replies than rounds", store.Census{Country: "KP", Started: start, Rounds: 1, Blocks: []netip.Prefix{block},
			Hosts: []store.CensusHost{{Kind: "icmp", Addr: addr("198.19.0.1"), Replies: 2}}}},
		{"port not probed", store.Census{Country: "KP", Started: start, Rounds: 1, Ports: []uint16{80}, Blocks: []netip.Prefix{block},
			Hosts: []store.CensusHost{{Kind: "tcp", Addr: addr("198.19.0.1"), Port: 22, Replies: 1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := st.SaveCensus(ctx, tt.give); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("SaveCensus: %v, want an invalid-input error", err)
			}
		})
	}
	if n := count(t, st, `SELECT count(*) FROM targets`); n != 0 {
		t.Fatalf("%d targets written by rejected censuses", n)
	}
	if n := count(t, st, `SELECT count(*) FROM blocks WHERE census_rounds > 0`); n != 0 {
		t.Fatalf("%d blocks marked censused by rejected censuses", n)
	}
}

func TestLoadPlan(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	importKP(t, st)
	start := time.Date(2014, 12, 20, 10, 0, 0, 0, time.UTC)
	if _, err := st.SaveCensus(ctx, store.Census{Country: "KP", Started: start, Rounds: 1,
		Blocks: []netip.Prefix{netip.MustParsePrefix("198.19.1.0/24")},
		Hosts:  []store.CensusHost{{Kind: "icmp", Addr: addr("198.19.1.7"), Replies: 1, LastReply: start}},
	}); err != nil {
		t.Fatal(err)
	}
	// A web server in a block the census found silent, a DNS server, an
	// IPv6 target (left out), and a control target.
	for _, tg := range []store.Target{
		{Kind: "tcp", Addr: addr("198.19.2.80"), Port: 80, Country: "KP"},
		{Kind: "dns", Addr: addr("198.19.1.53"), Qname: "kp", Country: "KP"},
		{Kind: "icmp", Addr: addr("198.18.200.1"), Control: true},
	} {
		if _, err := st.AddTarget(ctx, tg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.ImportPrefixes(ctx, store.Import{Country: "KP", Source: "v6", Prefixes: []store.Prefix{
		{Prefix: netip.MustParsePrefix("2001:db8::/32"), Registry: "apnic"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddTarget(ctx, store.Target{Kind: "tcp", Addr: addr("2001:db8::80"), Port: 80, Country: "KP"}); err != nil {
		t.Fatal(err)
	}

	plan, err := st.LoadPlan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, b := range plan.Blocks {
		got = append(got, b.Block.String())
	}
	if want := []string{"198.19.1.0/24", "198.19.2.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("plan blocks %v, want %v", got, want)
	}
	if len(plan.Blocks[1].Hosts) != 0 || len(plan.Blocks[0].Hosts) != 1 {
		t.Fatalf("hosts %+v", plan.Blocks)
	}
	if len(plan.Services) != 2 || plan.Services[0].Kind != "dns" || plan.Services[0].Qname != "kp." ||
		plan.Services[0].Port != 53 || plan.Services[0].Origin != "manual" || plan.Services[1].Block != netip.MustParsePrefix("198.19.2.0/24") {
		t.Fatalf("services %+v", plan.Services)
	}
	if len(plan.Controls) != 1 || plan.Controls[0].Addr != addr("198.18.200.1") {
		t.Fatalf("controls %+v", plan.Controls)
	}
	if plan.Skipped != 1 {
		t.Fatalf("skipped %d, want the IPv6 target", plan.Skipped)
	}
	if _, err := st.LoadPlan(ctx, "kp"); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("LoadPlan(kp): %v, want an invalid-input error", err)
	}
	other, err := st.LoadPlan(ctx, "IR")
	if err != nil || len(other.Blocks) != 0 || len(other.Controls) != 1 {
		t.Fatalf("LoadPlan(IR) = %+v, %v: want no blocks and the control target", other, err)
	}
}

func checkBlock(t *testing.T, st *store.Store, block string, ever int, avail float64, rounds int) {
	t.Helper()
	var e, r int
	var a *float32
	err := st.Pool().QueryRow(ctxT(t), `SELECT ever_responsive, availability, census_rounds FROM blocks WHERE block = $1`, block).Scan(&e, &a, &r)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case e != ever || r != rounds:
		t.Errorf("%s: ever_responsive %d, census_rounds %d; want %d, %d", block, e, r, ever, rounds)
	case avail < 0 && a != nil:
		t.Errorf("%s: availability %v, want NULL", block, *a)
	case avail >= 0 && (a == nil || float64(*a) < avail-1e-6 || float64(*a) > avail+1e-6):
		t.Errorf("%s: availability %v, want %v", block, a, avail)
	}
}

func checkTarget(t *testing.T, st *store.Store, kind, a string, port, probes, replies int) {
	t.Helper()
	var p, r int
	var origin string
	err := st.Pool().QueryRow(ctxT(t), `SELECT probes, replies, origin FROM targets WHERE kind = $1 AND addr = $2 AND port = $3`,
		kind, a, port).Scan(&p, &r, &origin)
	if err != nil {
		t.Fatalf("%s %s %d: %v", kind, a, port, err)
	}
	if p != probes || r != replies || origin != "census" {
		t.Errorf("%s %s %d: probes %d replies %d origin %s; want %d %d census", kind, a, port, p, r, origin, probes, replies)
	}
}
