package correlate_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/correlate"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

// logBuffer collects log lines written from another goroutine.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// eventually polls cond until it holds, failing the test after a
// deadline. It bounds how long the test waits; it asserts nothing about
// how long the work took.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFollow: a following correlator turns results into intervals as
// they arrive, and a database error (its connection killed under it) is
// logged and retried, not the end of it.
func TestFollow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.URL(t)
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	w := newWorld()
	cutAt, restoreAt := 30*time.Minute, 45*time.Minute
	w.blockDown = between(0, cutAt, restoreAt)
	w.setup(t, st)

	// The correlator has a pool of its own, named, so that its
	// connections can be killed and the test's kept.
	const app = "cutoff-follow-test"
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var logs logBuffer
	c := correlate.New(pool, correlate.Config{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Follow(fctx, 20*time.Millisecond) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Follow: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Follow did not return after its context ended")
		}
	}()

	count := func(sql string) int {
		var n int
		if err := st.Pool().QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// The first forty minutes: the cut is under way.
	all := w.batch()
	split := w.t0.Add(40 * time.Minute)
	var early, late store.Batch
	for _, o := range all.Observations {
		if o.At.Before(split) {
			early.Observations = append(early.Observations, o)
		} else {
			late.Observations = append(late.Observations, o)
		}
	}
	for _, r := range all.Results {
		if r.SentAt.Before(split) {
			early.Results = append(early.Results, r)
		} else {
			late.Results = append(late.Results, r)
		}
	}
	ingest(t, st, early)
	eventually(t, "the ongoing outage", func() bool {
		return count(`SELECT count(*) FROM country_outages WHERE country = 'XL' AND ongoing`) == 1
	})

	// Kill the correlator's connections until a pass fails on one.
	eventually(t, "a failed pass to be logged", func() bool {
		if _, err := st.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, app); err != nil {
			t.Fatal(err)
		}
		return strings.Contains(logs.String(), "correlate pass failed")
	})
	t.Logf("logged: %s", logs.String()[strings.Index(logs.String(), "correlate pass failed"):])

	// It goes on: the rest of the results end the outage.
	ingest(t, st, late)
	eventually(t, "the outage to end", func() bool {
		return count(`SELECT count(*) FROM country_outages WHERE country = 'XL' AND NOT ongoing`) == 1
	})
	o := outages(t, st, "country_outages", "country = 'XL'")
	if len(o) != 1 || o[0].start.Sub(w.t0.Add(cutAt)).Abs() > w.round/2 || o[0].end.Sub(w.t0.Add(restoreAt)).Abs() > w.round/2 {
		t.Fatalf("outages %+v, want one from %v to %v", o, w.t0.Add(cutAt), w.t0.Add(restoreAt))
	}
}

// TestPrune: results and verdicts are dropped by whole days past their
// own retention, and nothing is dropped without one.
func TestPrune(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := pgtest.New(t)
	w := newWorld() // its day, 2014-12-22, is long past
	w.setup(t, st)
	all := w.batch()
	ingest(t, st, all)
	count := func(table string) int {
		var n int
		if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	now := time.Now()
	tests := []struct {
		name                   string
		keepResults, keepVerds time.Duration
		wantResults, wantVerds int // partitions dropped
		leftResults, leftVerds int // rows left
	}{
		{"no retention keeps everything", 0, 0, 0, 0, len(all.Results), len(all.Observations)},
		{"results past 90 days", 90 * 24 * time.Hour, 0, 1, 0, 0, len(all.Observations)},
		{"then verdicts past a year", 90 * 24 * time.Hour, 365 * 24 * time.Hour, 0, 1, 0, 0},
	}
	// The cases run in order: each prunes what the one before left.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := correlate.New(st.Pool(), correlate.Config{KeepResults: tt.keepResults, KeepVerdicts: tt.keepVerds})
			r, v, err := c.Prune(ctx, now)
			if err != nil {
				t.Fatal(err)
			}
			if r != tt.wantResults || v != tt.wantVerds {
				t.Errorf("dropped %d result and %d verdict partitions, want %d and %d", r, v, tt.wantResults, tt.wantVerds)
			}
			if n, m := count("probe_results"), count("observations"); n != tt.leftResults || m != tt.leftVerds {
				t.Errorf("%d results and %d verdicts left, want %d and %d", n, m, tt.leftResults, tt.leftVerds)
			}
		})
	}
	// Today's partitions stay, ready for new results.
	var today int
	if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM unnest(ARRAY['probe_results_', 'observations_']) p
		WHERE to_regclass(p || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')) IS NOT NULL`).Scan(&today); err != nil {
		t.Fatal(err)
	}
	if today != 2 {
		t.Fatalf("%d of today's two partitions left", today)
	}
}
