package store_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestMigrateTwiceChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, err := store.Open(ctx, pgtest.EmptyURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	first, err := st.Migrate(ctx)
	if err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	if len(first) == 0 {
		t.Fatal("first migrate applied nothing")
	}
	second, err := st.Migrate(ctx)
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if len(second) != 0 {
		t.Fatalf("second migrate applied %v, want nothing", second)
	}
	cur, latest, err := st.SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cur != latest || cur != first[len(first)-1].Sequence {
		t.Fatalf("schema version %d, latest %d, last applied %d", cur, latest, first[len(first)-1].Sequence)
	}
	var kind string
	if err := st.Pool().QueryRow(ctx, `SELECT relkind::text FROM pg_class WHERE relname = 'probe_results'`).Scan(&kind); err != nil {
		t.Fatal(err)
	}
	if kind != "p" {
		t.Fatalf("probe_results relkind %q, want partitioned table (p)", kind)
	}
}

func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	url := pgtest.EmptyURL(t)
	var wg sync.WaitGroup
	applied := make([]int, 4)
	errs := make([]error, 4)
	for i := range 4 {
		wg.Go(func() {
			st, err := store.Open(ctx, url)
			if err != nil {
				errs[i] = err
				return
			}
			defer st.Close()
			m, err := st.Migrate(ctx)
			applied[i], errs[i] = len(m), err
		})
	}
	wg.Wait()
	total := 0
	for i := range 4 {
		if errs[i] != nil {
			t.Fatalf("migrate %d: %v", i, errs[i])
		}
		total += applied[i]
	}
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_, latest, err := st.SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if total != int(latest) {
		t.Fatalf("concurrent runs applied %d migrations in all, want each of %d exactly once", total, latest)
	}
}

func sample(n int, base time.Time) []store.Result {
	rs := make([]store.Result, n)
	for i := range rs {
		outcome := "reply"
		if i%3 == 0 {
			outcome = "timeout"
		}
		rs[i] = store.Result{
			Vantage: "vp1",
			Kind:    "icmp",
			Addr:    netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}),
			SentAt:  base.Add(time.Duration(i) * time.Millisecond),
			RTT:     3 * time.Millisecond,
			Outcome: outcome,
			Round:   7,
		}
		if outcome == "reply" {
			rs[i].Responder = rs[i].Addr
		}
	}
	return rs
}

func count(t *testing.T, st *store.Store, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := st.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestIngestExactlyOnce(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	base := time.Date(2014, 12, 22, 23, 59, 0, 0, time.UTC) // spans midnight: two partitions
	rs := sample(100_000, base)

	n, err := st.IngestResults(ctx, rs)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(rs)) {
		t.Fatalf("first ingest inserted %d, want %d", n, len(rs))
	}
	// A replay overlapping the first batch: only the new half counts.
	replay := append(sample(100_000, base)[50_000:], sample(1000, base.Add(time.Hour))...)
	n, err = st.IngestResults(ctx, replay)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1000 {
		t.Fatalf("replay inserted %d, want 1000 new", n)
	}
	if got := count(t, st, `SELECT count(*) FROM probe_results`); got != 101_000 {
		t.Fatalf("probe_results has %d rows, want 101000", got)
	}
	if got := count(t, st, `SELECT count(*) FROM probe_results WHERE rtt IS NULL`); got != count(t, st, `SELECT count(*) FROM probe_results WHERE outcome = 'timeout'`) {
		t.Fatalf("rtt NULL on %d rows, want exactly the timeouts", got)
	}
	if got := count(t, st, `SELECT count(*) FROM pg_inherits WHERE inhparent = 'probe_results'::regclass AND inhrelid::regclass::text IN ('probe_results_20141222', 'probe_results_20141223')`); got != 2 {
		t.Fatalf("%d of the two daily partitions exist", got)
	}
	if got := count(t, st, `SELECT coalesce(sum(inserted), 0) FROM ingest_log`); got != 101_000 {
		t.Fatalf("ingest_log counts %d inserted, want 101000", got)
	}
}

func TestIngestRejectsBadRows(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	base := time.Now().UTC()
	tests := []struct {
		name string
		give func(*store.Result)
	}{
		{"unknown outcome", func(r *store.Result) { r.Outcome = "maybe" }},
		{"unknown kind", func(r *store.Result) { r.Kind = "udp" }},
		{"no vantage", func(r *store.Result) { r.Vantage = "" }},
		{"no address", func(r *store.Result) { r.Addr = netip.Addr{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := sample(10, base)
			tt.give(&rs[5])
			if _, err := st.IngestResults(ctx, rs); err == nil {
				t.Fatal("ingest accepted a bad row")
			}
		})
	}
	// Nothing of the rejected batches is half-written.
	if got := count(t, st, `SELECT count(*) FROM probe_results`); got != 0 {
		t.Fatalf("%d rows written by rejected batches", got)
	}
	if got := count(t, st, `SELECT count(*) FROM ingest_log`); got != 0 {
		t.Fatalf("%d ingest_log lines written by rejected batches", got)
	}
}

func TestProberRoleCannotRewriteHistory(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	if _, err := st.IngestResults(ctx, sample(10, time.Now().UTC())); err != nil {
		t.Fatal(err)
	}
	conn, err := st.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SET ROLE cutoff_prober`); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(context.Background(), `RESET ROLE`)
	tests := []struct {
		name string
		give string
		ok   bool
	}{
		{"read targets", `SELECT count(*) FROM targets`, true},
		{"make partitions", `SELECT cutoff_ensure_partitions(now(), now() + interval '1 day')`, true},
		{"insert result", `INSERT INTO probe_results (vantage, kind, addr, sent_at, outcome) VALUES ('vp9', 'icmp', '198.19.0.1', now(), 'timeout')`, true},
		{"insert observation", `INSERT INTO observations (vantage, block, unit, at, sent_at, state, belief) VALUES ('vp9', '198.19.0.0/24', '198.19.0.0/24', now(), now(), 'up', 0.99)`, true},
		{"heartbeat", `SELECT cutoff_vantage_heartbeat('vp9', 660, 5, 12.5, 0, 0, NULL, 10, '{KP}', 'test', 'host')`, true},
		{"update result", `UPDATE probe_results SET outcome = 'reply'`, false},
		{"update observation", `UPDATE observations SET state = 'down'`, false},
		{"rewrite a vantage", `UPDATE vantages SET name = 'other'`, false},
		{"delete result", `DELETE FROM probe_results`, false},
		{"truncate results", `TRUNCATE probe_results`, false},
		{"drop partitions", `SELECT cutoff_drop_partitions(now() + interval '10 days')`, false},
		{"write intervals", `INSERT INTO country_intervals (country, during, state) VALUES ('KP', tstzrange(now(), null), 'down')`, false},
		{"change targets", `DELETE FROM targets`, false},
	}
	for _, tt := range tests {
		_, err := conn.Exec(ctx, tt.give)
		var pgErr *pgconn.PgError
		denied := errors.As(err, &pgErr) && pgErr.Code == "42501"
		if tt.ok && err != nil {
			t.Errorf("%s: %v, want allowed", tt.name, err)
		}
		if !tt.ok && !denied {
			t.Errorf("%s: err %v, want permission denied", tt.name, err)
		}
	}
}

func TestIntervalsNeverOverlap(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	exec := func(sql string) error { _, err := st.Pool().Exec(ctx, sql); return err }
	if err := exec(`INSERT INTO countries (code) VALUES ('KP')`); err != nil {
		t.Fatal(err)
	}
	if err := exec(`INSERT INTO country_intervals (country, during, state) VALUES ('KP', '[2014-12-22 16:15Z, 2014-12-23 01:46Z)', 'down')`); err != nil {
		t.Fatal(err)
	}
	if err := exec(`INSERT INTO country_intervals (country, during, state) VALUES ('KP', '[2014-12-23 01:46Z,)', 'up')`); err != nil {
		t.Fatalf("adjacent interval refused: %v", err)
	}
	err := exec(`INSERT INTO country_intervals (country, during, state) VALUES ('KP', '[2014-12-23 01:00Z, 2014-12-23 02:00Z)', 'up')`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23P01" {
		t.Fatalf("overlapping interval: err %v, want exclusion violation", err)
	}
	if err := exec(`INSERT INTO block_intervals (block, country, during, state) VALUES ('198.19.0.0/24', 'KP', '[2014-12-22 16:15Z, 2014-12-23 01:46Z)', 'down')`); err != nil {
		t.Fatal(err)
	}
	err = exec(`INSERT INTO block_intervals (block, country, during, state) VALUES ('198.19.0.0/24', 'KP', '[2014-12-22 17:00Z, 2014-12-22 18:00Z)', 'up')`)
	if !errors.As(err, &pgErr) || pgErr.Code != "23P01" {
		t.Fatalf("overlapping block interval: err %v, want exclusion violation", err)
	}
	var ongoing bool
	var started time.Time
	if err := st.Pool().QueryRow(ctx, `SELECT started_at, ongoing FROM country_outages WHERE country = 'KP'`).Scan(&started, &ongoing); err != nil {
		t.Fatal(err)
	}
	if !started.Equal(time.Date(2014, 12, 22, 16, 15, 0, 0, time.UTC)) || ongoing {
		t.Fatalf("country_outages: started %v ongoing %v", started, ongoing)
	}
}

func observations(n int, base time.Time) []store.Observation {
	os := make([]store.Observation, n)
	for i := range os {
		b := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i % 4), 0}), 24)
		os[i] = store.Observation{
			Vantage: "vp1", Block: b, At: base.Add(time.Duration(i) * time.Second),
			SentAt: base.Add(time.Duration(i)*time.Second - 300*time.Millisecond),
			State:  "up", Belief: 0.99, Probes: 1, Replies: 1, Round: int64(i / 4),
		}
	}
	return os
}

func TestIngestBatchIsAtomic(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	base := time.Date(2014, 12, 23, 15, 41, 0, 0, time.UTC)
	b := store.Batch{Results: sample(100, base), Observations: observations(40, base)}
	n, err := st.Ingest(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if n.Results != 100 || n.Observations != 40 {
		t.Fatalf("inserted %+v", n)
	}
	// The same batch again, plus new rows: only the new rows count.
	b.Observations = append(b.Observations, observations(50, base)[40:]...)
	if n, err = st.Ingest(ctx, b); err != nil || n.Results != 0 || n.Observations != 10 {
		t.Fatalf("replay inserted %+v, %v; want 0 results and 10 observations", n, err)
	}
	// A bad observation rejects the whole batch, results included.
	bad := store.Batch{Results: sample(10, base.Add(time.Hour)), Observations: observations(3, base.Add(time.Hour))}
	bad.Observations[2].State = "sideways"
	if _, err := st.Ingest(ctx, bad); err == nil {
		t.Fatal("batch with a bad observation accepted")
	}
	if got := count(t, st, `SELECT count(*) FROM probe_results`); got != 100 {
		t.Fatalf("%d results stored, want 100", got)
	}
	if got := count(t, st, `SELECT count(*) FROM observations`); got != 50 {
		t.Fatalf("%d observations stored, want 50", got)
	}
	if got := count(t, st, `SELECT count(*) FROM ingest_log WHERE tbl = 'observations'`); got != 2 {
		t.Fatalf("%d ingest_log lines for observations, want 2", got)
	}
}

func TestDropPartitions(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st := pgtest.New(t)
	old := time.Date(2014, 12, 20, 12, 0, 0, 0, time.UTC)
	recent := time.Date(2014, 12, 23, 12, 0, 0, 0, time.UTC)
	for _, at := range []time.Time{old, recent} {
		if _, err := st.Ingest(ctx, store.Batch{Results: sample(10, at), Observations: observations(4, at)}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := st.DropPartitions(ctx, "probe_results", time.Date(2014, 12, 22, 0, 0, 0, 0, time.UTC))
	if err != nil || n != 1 {
		t.Fatalf("dropped %d, %v; want the one old results partition", n, err)
	}
	if got := count(t, st, `SELECT count(*) FROM probe_results`); got != 10 {
		t.Fatalf("%d results left, want the recent 10", got)
	}
	if got := count(t, st, `SELECT count(*) FROM observations`); got != 8 {
		t.Fatalf("%d observations left, want all 8: only results were to go", got)
	}
	// A late result for a dropped day makes its partition again.
	if _, err := st.IngestResults(ctx, sample(5, old.Add(time.Minute))); err != nil {
		t.Fatalf("ingest into a dropped day: %v", err)
	}
	if _, err := st.DropPartitions(ctx, "targets", recent); err == nil {
		t.Fatal("dropped partitions of a table that has none")
	}
}
