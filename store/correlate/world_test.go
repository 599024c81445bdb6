package correlate_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/correlate"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// world is a synthetic country and its observers: what a scheduler would
// have reported, without packets, so the correlator's rules can be checked
// against a known truth.
type world struct {
	t0      time.Time
	span    time.Duration
	round   time.Duration
	timeout time.Duration
	blocks  []netip.Prefix // each block its own network, like the lab's
	country func(b int) string
	// blockDown and vantageDown give the truth at offset d from t0.
	blockDown   func(b int, d time.Duration) bool
	vantageDown func(v string, d time.Duration) bool
	vantages    []string
}

func newWorld() *world {
	w := &world{
		t0:          time.Date(2014, 12, 22, 12, 0, 0, 0, time.UTC),
		span:        90 * time.Minute,
		round:       60 * time.Second,
		timeout:     2 * time.Second,
		vantages:    []string{"vp1", "vp2"},
		blockDown:   func(int, time.Duration) bool { return false },
		vantageDown: func(string, time.Duration) bool { return false },
		country:     func(int) string { return "XL" },
	}
	for i := range 4 {
		w.blocks = append(w.blocks, netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", i)))
	}
	return w
}

// phase is a stable pseudo-random offset of a vantage's visits to a block
// within the round, as the scheduler spreads them.
func (w *world) phase(v string, b int) time.Duration {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", v, b)
	return time.Duration(h.Sum64() % uint64(w.round))
}

func (w *world) batch() store.Batch {
	var b store.Batch
	for _, v := range w.vantages {
		for bi, blk := range w.blocks {
			for d := w.phase(v, bi); d < w.span; d += w.round {
				up := !w.blockDown(bi, d) && !w.vantageDown(v, d)
				o := store.Observation{Vantage: v, Block: blk, SentAt: w.t0.Add(d), State: "up", Belief: 0.99, Probes: 1, Replies: 1,
					At: w.t0.Add(d + 30*time.Millisecond), Round: int64(d / w.round)}
				if !up {
					o.State, o.Belief, o.Probes, o.Replies = "down", 0.05, 5, 0
					o.At = w.t0.Add(d + w.timeout)
				}
				b.Observations = append(b.Observations, o)
			}
		}
		// A control target answers every round while the vantage is fine.
		for d := w.phase(v, 99); d < w.span; d += w.round {
			r := store.Result{Vantage: v, Kind: "icmp", Addr: netip.MustParseAddr("198.18.0.10"), SentAt: w.t0.Add(d),
				Outcome: "reply", RTT: time.Millisecond, Responder: netip.MustParseAddr("198.18.0.10")}
			if w.vantageDown(v, d) {
				r.Outcome, r.Responder = "timeout", netip.Addr{}
			}
			b.Results = append(b.Results, r)
		}
	}
	return b
}

// setup makes the schema's side of the world: the country, its blocks,
// the control target and the vantages.
func (w *world) setup(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	byCountry := map[string][]store.Prefix{}
	for i, b := range w.blocks {
		byCountry[w.country(i)] = append(byCountry[w.country(i)], store.Prefix{Prefix: b})
	}
	var imps []store.Import
	for cc, ps := range byCountry {
		imps = append(imps, store.Import{Country: cc, Source: "test", Prefixes: ps})
	}
	if _, err := st.ImportPrefixes(ctx, imps...); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddTarget(ctx, store.Target{Kind: "icmp", Addr: netip.MustParseAddr("198.18.0.10"), Control: true}); err != nil {
		t.Fatal(err)
	}
	for _, v := range w.vantages {
		if _, err := st.Pool().Exec(ctx, `SELECT cutoff_vantage_heartbeat($1, $2, $3, NULL, 0, 0, NULL, 0, '{}', 'test', 'test')`,
			v, w.round.Seconds(), w.timeout.Seconds()); err != nil {
			t.Fatal(err)
		}
	}
}

func ingest(t *testing.T, st *store.Store, b store.Batch) {
	t.Helper()
	if _, err := st.Ingest(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

func pass(t *testing.T, st *store.Store) correlate.Stats {
	t.Helper()
	s, err := correlate.New(st.Pool(), correlate.Config{}).Pass(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type outage struct {
	start, end time.Time
	ongoing    bool
	vantages   int
	reason     string // for vantage health
}

func outages(t *testing.T, st *store.Store, view, key string) []outage {
	t.Helper()
	rows, err := st.Pool().Query(context.Background(), fmt.Sprintf(`SELECT started_at, coalesce(ended_at, 'infinity'), ongoing, vantages
		FROM %s WHERE %s ORDER BY started_at`, view, key))
	if err != nil {
		t.Fatal(err)
	}
	var out []outage
	var o outage
	if _, err := pgx.ForEachRow(rows, []any{&o.start, &o.end, &o.ongoing, &o.vantages}, func() error {
		out = append(out, o)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// dump renders every derived table, for byte-for-byte comparisons.
func dump(t *testing.T, st *store.Store) string {
	t.Helper()
	var sb strings.Builder
	for _, q := range []string{
		`SELECT block::text, during::text, state, start_earliest, start_latest, end_earliest, end_latest, vantages FROM block_intervals ORDER BY 1, lower(during)`,
		`SELECT network::text, during::text, state, blocks_total, blocks_measurable, blocks_up, blocks_down, vantages, start_earliest, start_latest FROM network_intervals ORDER BY 1, lower(during)`,
		`SELECT country, during::text, state, blocks_total, blocks_measurable, blocks_up, blocks_down, vantages, start_earliest, start_latest, end_earliest, end_latest FROM country_intervals ORDER BY 1, lower(during)`,
		`SELECT vantage, during::text, state, reason FROM vantage_health ORDER BY 1, lower(during)`,
	} {
		rows, err := st.Pool().Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintln(&sb, vals...)
		}
		rows.Close()
	}
	return sb.String()
}

func between(d time.Duration, a, b time.Duration) func(int, time.Duration) bool {
	return func(_ int, x time.Duration) bool { return x >= a && x < b }
}

func TestBorderCut(t *testing.T) {
	t.Parallel()
	st := pgtest.New(t)
	w := newWorld()
	cutAt, restoreAt := 30*time.Minute, 45*time.Minute
	w.blockDown = between(0, cutAt, restoreAt)
	w.setup(t, st)
	ingest(t, st, w.batch())
	pass(t, st)

	got := outages(t, st, "country_outages", "country = 'XL'")
	if len(got) != 1 {
		t.Fatalf("country outages %+v, want one", got)
	}
	o := got[0]
	startErr, endErr := o.start.Sub(w.t0.Add(cutAt)), o.end.Sub(w.t0.Add(restoreAt))
	t.Logf("start error %v, end error %v (round %v, 4 blocks x 2 vantages)", startErr, endErr, w.round)
	// Eight visit streams spread across the round bracket the change to
	// well under a round.
	if startErr.Abs() > w.round/2 || endErr.Abs() > w.round/2 {
		t.Fatalf("outage %v–%v, truth %v–%v: off by %v and %v", o.start, o.end, w.t0.Add(cutAt), w.t0.Add(restoreAt), startErr, endErr)
	}
	if o.vantages != 2 || o.ongoing {
		t.Fatalf("outage seen by %d vantages, ongoing %v", o.vantages, o.ongoing)
	}
	var e, l time.Time
	st.Pool().QueryRow(context.Background(), `SELECT start_earliest, start_latest FROM country_outages`).Scan(&e, &l)
	if truth := w.t0.Add(cutAt); truth.Before(e) || truth.After(l) {
		t.Fatalf("start bracket [%v, %v] misses the truth %v", e, l, truth)
	}
	if n := len(outages(t, st, "network_outages", "true")); n != 4 {
		t.Fatalf("%d network outages, want all 4 networks", n)
	}
}

func TestVantageUplinkCutIsNoOutage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		vantages []string
	}{
		{"the other vantage still sees the country", []string{"vp1", "vp2"}},
		{"the only vantage is cut off", []string{"vp1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := pgtest.New(t)
			w := newWorld()
			w.vantages = tt.vantages
			w.vantageDown = func(v string, d time.Duration) bool { return v == "vp1" && d >= 30*time.Minute && d < 60*time.Minute }
			w.setup(t, st)
			ingest(t, st, w.batch())
			pass(t, st)
			if got := outages(t, st, "country_outages", "true"); len(got) != 0 {
				t.Fatalf("country outages %+v, want none", got)
			}
			if got := outages(t, st, "network_outages", "true"); len(got) != 0 {
				t.Fatalf("network outages %+v, want none", got)
			}
			var from, to time.Time
			var reason string
			err := st.Pool().QueryRow(context.Background(), `SELECT lower(during), upper(during), reason FROM vantage_health
				WHERE vantage = 'vp1' AND state = 'unhealthy'`).Scan(&from, &to, &reason)
			if err != nil {
				t.Fatalf("vp1 unhealthy interval: %v", err)
			}
			if from.After(w.t0.Add(30*time.Minute)) || to.Before(w.t0.Add(60*time.Minute)) || reason != "control targets unanswered" {
				t.Fatalf("vp1 unhealthy %v–%v (%s), want it to cover the cut 30–60 min", from.Sub(w.t0), to.Sub(w.t0), reason)
			}
		})
	}
}

func TestPartialAndFlapping(t *testing.T) {
	t.Parallel()
	st := pgtest.New(t)
	w := newWorld()
	w.blockDown = func(b int, d time.Duration) bool {
		switch {
		case b >= 2 && d >= 20*time.Minute && d < 40*time.Minute:
			return true // two of four networks cut
		case b == 1 && d >= 50*time.Minute && d < 80*time.Minute:
			return (d/(4*time.Minute))%2 == 0 // one network flapping
		}
		return false
	}
	w.setup(t, st)
	ingest(t, st, w.batch())
	pass(t, st)

	if got := outages(t, st, "country_outages", "true"); len(got) != 0 {
		t.Fatalf("country outages %+v, want none: half the country is not the country", got)
	}
	var partial int
	st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM country_intervals WHERE state = 'partial'`).Scan(&partial)
	if partial == 0 {
		t.Fatal("no partial country interval while two of four networks were down")
	}
	cut := outages(t, st, "network_outages", "network = '198.19.2.0/24'")
	if len(cut) != 1 {
		t.Fatalf("network 2 outages %+v, want one", cut)
	}
	flaps := outages(t, st, "network_outages", "network = '198.19.1.0/24'")
	if len(flaps) < 3 {
		t.Fatalf("flapping network: %d outages, want the flaps (≥3)", len(flaps))
	}
	if got := outages(t, st, "network_outages", "network = '198.19.0.0/24'"); len(got) != 0 {
		t.Fatalf("steady network has outages %+v", got)
	}
}

func TestMassFailureSetsVantageAside(t *testing.T) {
	t.Parallel()
	st := pgtest.New(t)
	w := newWorld()
	w.vantages = []string{"vp1", "vp2"}
	w.blocks = nil
	// Thirty blocks in three countries; vp1 loses them all for a while but
	// its control target (say, in its own data centre) still answers.
	for i := range 30 {
		w.blocks = append(w.blocks, netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", i)))
	}
	w.country = func(b int) string { return []string{"XA", "XB", "XC"}[b%3] }
	w.blockDown = func(int, time.Duration) bool { return false }
	w.span = 40 * time.Minute
	base := w.batch()
	for i := range base.Observations {
		o := &base.Observations[i]
		if d := o.SentAt.Sub(w.t0); o.Vantage == "vp1" && d >= 10*time.Minute && d < 20*time.Minute {
			o.State, o.Belief, o.Replies = "down", 0.05, 0
		}
	}
	w.setup(t, st)
	ingest(t, st, base)
	pass(t, st)
	if got := outages(t, st, "country_outages", "true"); len(got) != 0 {
		t.Fatalf("country outages %+v, want none", got)
	}
	var reason string
	if err := st.Pool().QueryRow(context.Background(), `SELECT reason FROM vantage_health WHERE vantage = 'vp1' AND state = 'unhealthy'`).Scan(&reason); err != nil {
		t.Fatalf("vp1 not set aside: %v", err)
	}
	if !strings.HasPrefix(reason, "mass failure") {
		t.Fatalf("reason %q", reason)
	}
}

func TestLateResultsAndIdempotence(t *testing.T) {
	t.Parallel()
	w := newWorld()
	w.blockDown = between(0, 30*time.Minute, 45*time.Minute)
	all := w.batch()

	// One database gets everything at once.
	once := pgtest.New(t)
	w.setup(t, once)
	ingest(t, once, all)
	pass(t, once)
	want := dump(t, once)

	// Another gets vp1's results first, vp2's hours late (a spool
	// replay), in chunks, with passes in between.
	late := pgtest.New(t)
	w.setup(t, late)
	var vp1, vp2 store.Batch
	for _, o := range all.Observations {
		if o.Vantage == "vp1" {
			vp1.Observations = append(vp1.Observations, o)
		} else {
			vp2.Observations = append(vp2.Observations, o)
		}
	}
	for _, r := range all.Results {
		if r.Vantage == "vp1" {
			vp1.Results = append(vp1.Results, r)
		} else {
			vp2.Results = append(vp2.Results, r)
		}
	}
	sort.Slice(vp1.Observations, func(i, j int) bool { return vp1.Observations[i].At.Before(vp1.Observations[j].At) })
	half := len(vp1.Observations) / 2
	ingest(t, late, store.Batch{Observations: vp1.Observations[:half], Results: vp1.Results})
	pass(t, late)
	ingest(t, late, store.Batch{Observations: vp1.Observations[half:]})
	pass(t, late)
	if d := dump(t, late); d == want {
		t.Fatal("vp1 alone gave the same intervals as both vantages: the test proves nothing")
	}
	ingest(t, late, vp2)
	pass(t, late)
	if got := dump(t, late); got != want {
		t.Fatalf("late results not folded in the same way\n got:\n%s\nwant:\n%s", got, want)
	}

	// Re-running changes nothing: no new batches, and a full recompute
	// writes no row.
	if s := pass(t, late); s.Batches != 0 {
		t.Fatalf("second pass found %d batches", s.Batches)
	}
	s, err := correlate.New(late.Pool(), correlate.Config{}).Recompute(context.Background(), w.t0.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if s.Inserted != 0 || s.Deleted != 0 {
		t.Fatalf("recompute over the same data wrote %d and deleted %d rows", s.Inserted, s.Deleted)
	}
	if got := dump(t, late); got != want {
		t.Fatal("recompute changed the intervals")
	}
}

// TestPropertyIncrementalEqualsOnePass: however results arrive (in
// chunks, out of order, vantages hours apart) and however often the
// correlator runs in between, the intervals end up exactly as one pass
// over everything gives, every key's intervals are contiguous from its
// first to its open current one, and every result is counted once.
func TestPropertyIncrementalEqualsOnePass(t *testing.T) {
	t.Parallel()
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			w := newWorld()
			w.span = 60 * time.Minute
			type span struct{ a, b time.Duration }
			down := map[int][]span{}
			for b := range w.blocks {
				for range rng.IntN(3) {
					a := time.Duration(rng.IntN(50)) * time.Minute
					down[b] = append(down[b], span{a, a + time.Duration(1+rng.IntN(10))*time.Minute})
				}
			}
			w.blockDown = func(b int, d time.Duration) bool {
				for _, s := range down[b] {
					if d >= s.a && d < s.b {
						return true
					}
				}
				return false
			}
			fault := time.Duration(rng.IntN(50)) * time.Minute
			w.vantageDown = func(v string, d time.Duration) bool { return v == "vp2" && d >= fault && d < fault+5*time.Minute }
			all := w.batch()

			once := pgtest.New(t)
			w.setup(t, once)
			ingest(t, once, all)
			pass(t, once)
			want := dump(t, once)

			inc := pgtest.New(t)
			w.setup(t, inc)
			obs := append([]store.Observation(nil), all.Observations...)
			rng.Shuffle(len(obs), func(i, j int) { obs[i], obs[j] = obs[j], obs[i] })
			res := append([]store.Result(nil), all.Results...)
			for len(obs) > 0 || len(res) > 0 {
				n, m := min(len(obs), 1+rng.IntN(200)), min(len(res), rng.IntN(40))
				ingest(t, inc, store.Batch{Observations: obs[:n], Results: res[:m]})
				obs, res = obs[n:], res[m:]
				if rng.IntN(2) == 0 {
					pass(t, inc)
				}
			}
			// A replayed chunk changes nothing either.
			ingest(t, inc, store.Batch{Observations: all.Observations[:100]})
			pass(t, inc)
			if got := dump(t, inc); got != want {
				t.Fatalf("incremental passes differ from one pass\n got:\n%s\nwant:\n%s", got, want)
			}
			var rows int
			inc.Pool().QueryRow(context.Background(), `SELECT count(*) FROM observations`).Scan(&rows)
			if rows != len(all.Observations) {
				t.Fatalf("%d observations stored, want each of %d once", rows, len(all.Observations))
			}
			// Contiguity of every key's intervals.
			for _, q := range []string{
				`SELECT block::text, lower(during), upper(during) FROM block_intervals ORDER BY 1, 2`,
				`SELECT network::text, lower(during), upper(during) FROM network_intervals ORDER BY 1, 2`,
				`SELECT country, lower(during), upper(during) FROM country_intervals ORDER BY 1, 2`,
				`SELECT vantage, lower(during), upper(during) FROM vantage_health ORDER BY 1, 2`,
			} {
				rows, err := inc.Pool().Query(context.Background(), q)
				if err != nil {
					t.Fatal(err)
				}
				var key, prevKey string
				var lo time.Time
				var hi, prevHi *time.Time
				_, err = pgx.ForEachRow(rows, []any{&key, &lo, &hi}, func() error {
					if key == prevKey && (prevHi == nil || !prevHi.Equal(lo)) {
						return fmt.Errorf("%s: gap or overlap at %v", key, lo)
					}
					if key != prevKey && prevKey != "" && prevHi != nil {
						return fmt.Errorf("%s: last interval is closed", prevKey)
					}
					prevKey, prevHi = key, hi
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestEvents: an outage is announced once when it starts and once when it
// ends, however many passes see it.
func TestEvents(t *testing.T) {
	t.Parallel()
	st := pgtest.New(t)
	w := newWorld()
	w.blockDown = between(0, 30*time.Minute, 45*time.Minute)
	w.setup(t, st)
	var events []correlate.Event
	c := correlate.New(st.Pool(), correlate.Config{Events: func(e correlate.Event) { events = append(events, e) }})
	all := w.batch()
	sort.Slice(all.Observations, func(i, j int) bool { return all.Observations[i].At.Before(all.Observations[j].At) })
	// Feed the results in ten-minute slices, a pass after each.
	for cut := w.t0.Add(10 * time.Minute); !cut.After(w.t0.Add(w.span + 10*time.Minute)); cut = cut.Add(10 * time.Minute) {
		var b store.Batch
		for _, o := range all.Observations {
			if !o.At.Before(cut.Add(-10*time.Minute)) && o.At.Before(cut) {
				b.Observations = append(b.Observations, o)
			}
		}
		for _, r := range all.Results {
			if !r.SentAt.Before(cut.Add(-10*time.Minute)) && r.SentAt.Before(cut) {
				b.Results = append(b.Results, r)
			}
		}
		ingest(t, st, b)
		if _, err := c.Pass(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	count := map[string]int{}
	for _, e := range events {
		count[e.Scope+" "+e.Kind]++
	}
	want := map[string]int{"country outage_started": 1, "country outage_ended": 1, "network outage_started": 4, "network outage_ended": 4}
	for k, n := range want {
		if count[k] != n {
			t.Fatalf("events %v, want %v", count, want)
		}
	}
	for _, e := range events {
		if e.Scope == "country" && e.Kind == "outage_ended" && e.End.Sub(e.Start).Round(time.Minute) != 15*time.Minute {
			t.Fatalf("country outage event %+v, want 15 minutes", e)
		}
	}
}

// countryStates lists a country's interval states in time order.
func countryStates(t *testing.T, st *store.Store, country string) []string {
	t.Helper()
	rows, err := st.Pool().Query(context.Background(), `SELECT state FROM country_intervals WHERE country = $1 ORDER BY lower(during)`, country)
	if err != nil {
		t.Fatal(err)
	}
	states, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return states
}

// threeCountries is thirty blocks, ten in each of XA, XB and XC, seen by
// two vantages: enough for the mass-failure rule to apply.
func threeCountries() *world {
	w := newWorld()
	w.blocks = nil
	for i := range 30 {
		w.blocks = append(w.blocks, netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", i)))
	}
	w.country = func(b int) string { return []string{"XA", "XB", "XC"}[b%3] }
	w.span = 60 * time.Minute
	return w
}

// unhealthy lists a vantage's unhealthy intervals.
func unhealthy(t *testing.T, st *store.Store, vantage string) []outage {
	t.Helper()
	rows, err := st.Pool().Query(context.Background(), `SELECT lower(during), coalesce(upper(during), 'infinity'), reason
		FROM vantage_health WHERE vantage = $1 AND state = 'unhealthy' ORDER BY lower(during)`, vantage)
	if err != nil {
		t.Fatal(err)
	}
	var out []outage
	var o outage
	if _, err := pgx.ForEachRow(rows, []any{&o.start, &o.end, &o.reason}, func() error {
		out = append(out, o)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// roundCases are the round lengths the mass-failure tests run at: a
// vantage's evidence is as fresh as its round.
var roundCases = []struct {
	name  string
	round time.Duration
}{
	{"one-minute rounds", time.Minute},
	{"five-minute rounds", 5 * time.Minute},
}

// TestTwoCountriesCutAtOnce: two countries cut at the same time look,
// from each vantage, like a mass failure; but both vantages see it, so it
// is a real outage and neither is set aside.
func TestTwoCountriesCutAtOnce(t *testing.T) {
	t.Parallel()
	for _, tt := range roundCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := pgtest.New(t)
			w := threeCountries()
			w.round = tt.round
			cutAt, restoreAt := 20*time.Minute, 35*time.Minute
			w.blockDown = func(b int, d time.Duration) bool { return w.country(b) != "XC" && d >= cutAt && d < restoreAt }
			w.setup(t, st)
			ingest(t, st, w.batch())
			pass(t, st)

			for _, v := range w.vantages {
				if got := unhealthy(t, st, v); len(got) != 0 {
					t.Errorf("%s set aside %+v: both vantages saw the cut", v, got)
				}
			}
			for _, cc := range []string{"XA", "XB"} {
				if got := countryStates(t, st, cc); strings.Join(got, " ") != "up down up" {
					t.Fatalf("%s states %v, want up down up", cc, got)
				}
				got := outages(t, st, "country_outages", "country = '"+cc+"'")
				o := got[0]
				startErr, endErr := o.start.Sub(w.t0.Add(cutAt)), o.end.Sub(w.t0.Add(restoreAt))
				t.Logf("%s: start error %v, end error %v", cc, startErr, endErr)
				if startErr.Abs() > w.round/2 || endErr.Abs() > w.round/2 || o.vantages != 2 {
					t.Errorf("%s outage %v–%v seen by %d vantages, truth %v–%v", cc, o.start.Sub(w.t0), o.end.Sub(w.t0), o.vantages, cutAt, restoreAt)
				}
			}
			if got := countryStates(t, st, "XC"); strings.Join(got, " ") != "up" {
				t.Errorf("XC states %v, want up throughout", got)
			}
			// Every cut block is down once, and no other block ever is:
			// no short false outage after the cut.
			var downs, blocks int
			var countries string
			st.Pool().QueryRow(context.Background(), `SELECT count(*), count(DISTINCT block), string_agg(DISTINCT country, ',' ORDER BY country)
				FROM block_intervals WHERE state = 'down'`).Scan(&downs, &blocks, &countries)
			if downs != 20 || blocks != 20 || countries != "XA,XB" {
				t.Errorf("%d block down intervals in %d blocks of %s, want one in each of the 20 blocks of XA and XB", downs, blocks, countries)
			}
		})
	}
}

// TestVantageLocalFault: a vantage whose path to most blocks of every
// country breaks while its control target answers, and which the other
// vantage contradicts, is set aside; nothing is reported down.
func TestVantageLocalFault(t *testing.T) {
	t.Parallel()
	for _, tt := range roundCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := pgtest.New(t)
			w := threeCountries()
			w.round = tt.round
			faultAt, fixedAt := 20*time.Minute, 35*time.Minute
			// Seven of the ten blocks of each country, from vp1 only.
			lost := func(b int) bool { return b/3 < 7 }
			all := w.batch()
			for i := range all.Observations {
				o := &all.Observations[i]
				b := slicesIndex(w.blocks, o.Block)
				if d := o.SentAt.Sub(w.t0); o.Vantage == "vp1" && lost(b) && d >= faultAt && d < fixedAt {
					o.State, o.Belief, o.Replies, o.At = "down", 0.05, 0, o.SentAt.Add(w.timeout)
				}
			}
			w.setup(t, st)
			ingest(t, st, all)
			pass(t, st)

			got := unhealthy(t, st, "vp1")
			if len(got) != 1 {
				t.Fatalf("vp1 unhealthy %+v, want one interval", got)
			}
			h := got[0]
			t.Logf("vp1 set aside %v–%v: %s", h.start.Sub(w.t0), h.end.Sub(w.t0), h.reason)
			if !strings.HasPrefix(h.reason, "mass failure") || !strings.Contains(h.reason, "other vantages reached") {
				t.Errorf("reason %q", h.reason)
			}
			if h.start.After(w.t0.Add(faultAt)) || h.end.Before(w.t0.Add(fixedAt)) {
				t.Errorf("vp1 set aside %v–%v, want it to cover the fault %v–%v", h.start.Sub(w.t0), h.end.Sub(w.t0), faultAt, fixedAt)
			}
			if got := unhealthy(t, st, "vp2"); len(got) != 0 {
				t.Errorf("vp2 set aside %+v", got)
			}
			for _, cc := range []string{"XA", "XB", "XC"} {
				if got := countryStates(t, st, cc); strings.Join(got, " ") != "up" {
					t.Errorf("%s states %v, want up throughout", cc, got)
				}
			}
			var downs int
			st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM block_intervals WHERE state <> 'up'`).Scan(&downs)
			if downs != 0 {
				t.Errorf("%d block intervals not up, want none: vp2 reached every block", downs)
			}
		})
	}
}

// TestSingleVantageMassFailure documents what one vantage alone does with
// a mass failure: it cannot tell two countries cut at once from its own
// fault, so its evidence is set aside either way and the period is
// unknown everywhere, with no outage and no short false outage after it.
func TestSingleVantageMassFailure(t *testing.T) {
	t.Parallel()
	cutAt, restoreAt := 20*time.Minute, 35*time.Minute
	tests := []struct {
		name        string
		blockDown   func(b int, d time.Duration) bool
		vantageDown func(v string, d time.Duration) bool
	}{
		{
			"two countries cut",
			func(b int, d time.Duration) bool { return b%3 != 2 && d >= cutAt && d < restoreAt },
			func(string, time.Duration) bool { return false },
		},
		{
			"the vantage's own fault, its control target still answering",
			func(b int, d time.Duration) bool { return b/3 < 7 && d >= cutAt && d < restoreAt },
			func(string, time.Duration) bool { return false },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := pgtest.New(t)
			w := threeCountries()
			w.vantages = []string{"vp1"}
			w.blockDown, w.vantageDown = tt.blockDown, tt.vantageDown
			w.setup(t, st)
			ingest(t, st, w.batch())
			pass(t, st)

			got := unhealthy(t, st, "vp1")
			if len(got) != 1 || !strings.HasSuffix(got[0].reason, "no other vantage could check") {
				t.Fatalf("vp1 unhealthy %+v, want one mass failure no other vantage could check", got)
			}
			h := got[0]
			if h.start.After(w.t0.Add(cutAt)) || h.end.Before(w.t0.Add(restoreAt)) {
				t.Errorf("vp1 set aside %v–%v, want it to cover %v–%v", h.start.Sub(w.t0), h.end.Sub(w.t0), cutAt, restoreAt)
			}
			for _, cc := range []string{"XA", "XB", "XC"} {
				if got := countryStates(t, st, cc); strings.Join(got, " ") != "up unknown up" {
					t.Errorf("%s states %v, want up unknown up", cc, got)
				}
			}
			var downs int
			st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM block_intervals WHERE state = 'down'`).Scan(&downs)
			if downs != 0 {
				t.Errorf("%d block down intervals, want none", downs)
			}
		})
	}
}

func slicesIndex(ps []netip.Prefix, p netip.Prefix) int {
	for i, q := range ps {
		if q == p {
			return i
		}
	}
	return -1
}
