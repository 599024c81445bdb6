package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

// value reads a counter or gauge.
func value(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("not a counter or gauge: %v", &d)
	return 0
}

// pipeConfig is a configuration for NewPipe on db, with a fresh spool.
func pipeConfig(t *testing.T, db string) Config {
	cfg := valid()
	cfg.DB = db
	cfg.Spool = t.TempDir()
	return cfg
}

// proberLogin makes a login in the cutoff_prober role, as a vantage has.
// testStore opens a fresh test database and returns its URL and a store
// on it, closed when the test ends.
func testStore(ctx context.Context, t *testing.T) (string, *store.Store) {
	t.Helper()
	url := pgtest.URL(t)
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return url, st
}

func proberLogin(t *testing.T, st *store.Store, url string) string {
	t.Helper()
	role := fmt.Sprintf("vp_%d", time.Now().UnixNano()%1e9)
	if _, err := st.Pool().Exec(context.Background(), `CREATE ROLE `+role+` LOGIN IN ROLE cutoff_prober`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Pool().Exec(context.Background(), `DROP OWNED BY `+role+`; DROP ROLE `+role) })
	return url + " user=" + role
}

// hand gives the pipe n distinct results, starting at the i-th.
func hand(p *Pipe, from, n int, base time.Time) {
	for i := from; i < from+n; i++ {
		p.Result(sched.Result{Result: prober.Result{
			Target:  prober.Target{Kind: prober.KindICMP, Addr: netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})},
			Sent:    base.Add(time.Duration(i) * time.Millisecond),
			Outcome: prober.Timeout,
		}, Round: 1})
	}
}

func rejectedFiles(t *testing.T, cfg Config) []string {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(cfg.rejectDir(), "batch-*"))
	return names
}

// TestRefusedBatchesStayInTheSpool: a database that refuses the agent's
// writes for a reason that is not the rows' fault (here the prober role
// lost its INSERT privilege, SQLSTATE 42501; then a read-only server,
// 25006) must not make it set batches aside: they stay in the spool,
// the refusal is logged with its SQLSTATE, and once the privilege is back
// every result lands exactly once.
func TestRefusedBatchesStayInTheSpool(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url, st := testStore(ctx, t)
	cfg := pipeConfig(t, proberLogin(t, st, url))
	exec := func(sql string) {
		t.Helper()
		if _, err := st.Pool().Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}

	exec(`REVOKE INSERT ON probe_results FROM cutoff_prober`)
	var log syncBuffer
	p, err := NewPipe(ctx, cfg, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	base := time.Now().UTC().Truncate(time.Second)
	for i := range 5 {
		hand(p, i*100, 100, base)
		p.a.col.flush()
	}
	refused := func() float64 { return value(t, p.a.m.ingestErr.WithLabelValues("refused")) }
	waitFor(t, "the writer to be refused a few times", 20*time.Second, func() bool { return refused() >= 3 })
	if s := p.Stats(); s.Spooled != 500 || s.Pending == 0 {
		t.Fatalf("%d results spooled, %d batches pending: want all 500 waiting in the spool", s.Spooled, s.Pending)
	}
	if names := rejectedFiles(t, cfg); len(names) > 0 {
		t.Fatalf("batches set aside for a missing privilege: %v", names)
	}
	if !strings.Contains(log.String(), "sqlstate=42501") {
		t.Fatalf("the refusal is not logged with its SQLSTATE:\n%s", log.String())
	}
	if n := count(t, st, `SELECT count(*) FROM probe_results`); n != 0 {
		t.Fatalf("%d results stored without the privilege", n)
	}

	exec(`GRANT INSERT ON probe_results TO cutoff_prober`)
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	defer dcancel()
	if err := p.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, st, `SELECT count(*) FROM probe_results`); n != 500 || p.Stats().Ingested != 500 {
		t.Fatalf("%d results stored, %d counted as new, want each of the 500 once", n, p.Stats().Ingested)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	// A read-only server (a standby after a failover, say): the same.
	role := strings.TrimPrefix(cfg.DB[strings.LastIndex(cfg.DB, "user="):], "user=")
	exec(`ALTER ROLE ` + role + ` SET default_transaction_read_only = on`)
	log = syncBuffer{}
	p, err = NewPipe(ctx, cfg, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	hand(p, 500, 100, base)
	p.a.col.flush()
	waitFor(t, "the writer to be refused", 20*time.Second, func() bool { return refused() >= 2 })
	if !strings.Contains(log.String(), "sqlstate=25006") {
		t.Fatalf("the refusal is not logged with its SQLSTATE:\n%s", log.String())
	}
	p.Close() // its connections stay read-only: start afresh, as after a restart
	if names := rejectedFiles(t, cfg); len(names) > 0 {
		t.Fatalf("batches set aside by a read-only server: %v", names)
	}
	exec(`ALTER ROLE ` + role + ` RESET default_transaction_read_only`)
	p, err = NewPipe(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, st, `SELECT count(*) FROM probe_results`); n != 600 {
		t.Fatalf("%d results stored, want each of the 600 once", n)
	}
}

// TestBadRowsSetAsideAlone: rows the database refuses as bad data (here
// a negative RTT and a belief over 1, breaking CHECK constraints) are set
// aside alone; the good rows of their batch land. Replayed once the cause
// is fixed, they land too, and the rejected directory empties.
func TestBadRowsSetAsideAlone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url, st := testStore(ctx, t)
	cfg := pipeConfig(t, url)
	p, err := NewPipe(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	base := time.Now().UTC().Truncate(time.Second)
	hand(p, 0, 100, base)
	p.Result(sched.Result{Result: prober.Result{
		Target: prober.Target{Kind: prober.KindICMP, Addr: netip.MustParseAddr("198.19.7.7")},
		Sent:   base, Outcome: prober.Reply, RTT: -time.Millisecond,
	}, Round: 1})
	hand(p, 100, 100, base)
	block := netip.MustParsePrefix("198.19.0.0/24")
	p.Verdict(sched.Verdict{Unit: block, Blocks: []netip.Prefix{block}, Round: 1, State: sched.Up, Belief: 0.99, Start: base, Time: base.Add(time.Second), Probes: 2, Replies: 1})
	p.Verdict(sched.Verdict{Unit: block, Blocks: []netip.Prefix{block}, Round: 2, State: sched.Up, Belief: 1.5, Start: base, Time: base.Add(2 * time.Second), Probes: 2, Replies: 1})
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	defer dcancel()
	if err := p.Drain(dctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, st, `SELECT count(*) FROM probe_results`); n != 200 {
		t.Fatalf("%d results stored, want the 200 good ones", n)
	}
	if n := count(t, st, `SELECT count(*) FROM observations`); n != 1 {
		t.Fatalf("%d observations stored, want the good one", n)
	}
	// The two bad rows may have gone to the spool in one batch or in two
	// (the collector writes as results come): each batch set aside has
	// its note, and together they hold the two rows and nothing else.
	names := rejectedFiles(t, cfg)
	var batches []string
	for _, n := range names {
		if !strings.HasSuffix(n, ".why") {
			batches = append(batches, n)
		}
	}
	if len(batches) < 1 || len(batches) > 2 || len(names) != 2*len(batches) {
		t.Fatalf("rejected: %v, want one or two batches, each with its note", names)
	}
	refusedRows := 0
	for _, b := range batches {
		why, err := os.ReadFile(b + ".why")
		if err != nil || !strings.Contains(string(why), "check constraint") {
			t.Fatalf("note of %s: %s (%v)", b, why, err)
		}
		var n int
		if _, err := fmt.Sscanf(string(why), "%d rows refused", &n); err != nil {
			t.Fatalf("note of %s: %q: %v", b, why, err)
		}
		refusedRows += n
	}
	if refusedRows != 2 {
		t.Fatalf("notes say %d rows refused, want the 2 bad ones", refusedRows)
	}
	if got := value(t, p.a.m.ingestErr.WithLabelValues("invalid")); got != float64(len(batches)) {
		t.Fatalf("cutoff_ingest_errors_total{reason=invalid} = %v, want %d", got, len(batches))
	}

	// Still refused: kept, alone.
	r, err := ReplayRejected(ctx, url, cfg.Spool, nil)
	if err != nil || r.Files != len(batches) || r.Kept != len(batches) || r.KeptRows != 2 {
		t.Fatalf("replay before the fix: %+v, %v", r, err)
	}
	// The fix (here: the constraints go), then the replay.
	for _, sql := range []string{
		`ALTER TABLE probe_results DROP CONSTRAINT probe_results_rtt_check`,
		`ALTER TABLE observations DROP CONSTRAINT observations_belief_check`,
	} {
		if _, err := st.Pool().Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	r, err = ReplayRejected(ctx, url, cfg.Spool, nil)
	if err != nil || r.Kept != 0 || r.Stored.Results != 1 || r.Stored.Observations != 1 {
		t.Fatalf("replay after the fix: %+v, %v", r, err)
	}
	if names := rejectedFiles(t, cfg); len(names) != 0 {
		t.Fatalf("left after the replay: %v", names)
	}
	if n := count(t, st, `SELECT count(*) FROM probe_results`); n != 201 {
		t.Fatalf("%d results stored, want 201", n)
	}
}
