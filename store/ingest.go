package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Result is one probe as stored in probe_results.
type Result struct {
	Vantage string
	Kind    string // icmp, tcp or dns
	Addr    netip.Addr
	Port    uint16
	SentAt  time.Time
	// RTT is stored for every outcome except timeout and error.
	RTT     time.Duration
	Outcome string // reply, refused, timeout, unreachable or error
	// Responder is who answered: the target, or the router that reported
	// it unreachable. The zero Addr stores NULL.
	Responder netip.Addr
	// Rcode is the DNS response code, stored for answered DNS probes only.
	Rcode int
	Round int64
}

var resultColumns = []string{"vantage", "kind", "addr", "port", "sent_at", "rtt", "outcome", "responder", "rcode", "round"}

// hasRTT says whether an outcome comes with a meaningful round-trip time.
func hasRTT(outcome string) bool { return outcome != "timeout" && outcome != "error" }

// partitions remembers which daily partitions are known to exist, so the
// hot path does not ask the server on every batch.
type partitions struct {
	mu   sync.Mutex
	days map[int64]bool // days since the epoch, UTC
}

func dayOf(t time.Time) int64 { return t.Unix() / 86400 }

// Ingest stores results, each exactly once: results already stored (a
// vantage re-sending after a lost acknowledgement, or replaying its spool)
// are dropped, not counted and not an error. It returns how many rows were
// new. The whole batch commits or none of it does, together with its line
// in ingest_log, which tells the correlator what changed.
//
// The fast path COPYs straight into probe_results; only when that meets a
// duplicate does the batch go through a staging table and
// INSERT … ON CONFLICT DO NOTHING.
func (s *Store) Ingest(ctx context.Context, rs []Result) (int64, error) {
	if len(rs) == 0 {
		return 0, nil
	}
	if err := s.ensurePartitions(ctx, rs); err != nil {
		return 0, err
	}
	n, err := s.ingest(ctx, rs)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23514" {
		// "no partition of relation found for row": a partition was
		// dropped under us (retention). Forget what we knew and retry once.
		s.parts.mu.Lock()
		s.parts.days = nil
		s.parts.mu.Unlock()
		if err := s.ensurePartitions(ctx, rs); err != nil {
			return 0, err
		}
		n, err = s.ingest(ctx, rs)
	}
	return n, err
}

func (s *Store) ingest(ctx context.Context, rs []Result) (int64, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("ingest: %w", err)
	}
	defer tx.Rollback(ctx)

	inserted, err := copyDirect(ctx, tx, rs)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		inserted, err = copyDedup(ctx, tx, rs)
	}
	if err != nil {
		return 0, fmt.Errorf("ingest %d results: %w", len(rs), err)
	}
	if err := logIngest(ctx, tx, rs, inserted); err != nil {
		return 0, fmt.Errorf("ingest: log: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("ingest: commit: %w", err)
	}
	return inserted, nil
}

// copyDirect copies into probe_results inside a savepoint, so that a
// duplicate key leaves the transaction usable for the slow path.
func copyDirect(ctx context.Context, tx pgx.Tx, rs []Result) (int64, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, err
	}
	n, err := sp.CopyFrom(ctx, pgx.Identifier{"probe_results"}, resultColumns, &resultRows{rs: rs})
	if err != nil {
		sp.Rollback(ctx)
		return 0, err
	}
	return n, sp.Commit(ctx)
}

func copyDedup(ctx context.Context, tx pgx.Tx, rs []Result) (int64, error) {
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS probe_results_in
		(LIKE probe_results INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`); err != nil {
		return 0, fmt.Errorf("staging table: %w", err)
	}
	if _, err := tx.Exec(ctx, `TRUNCATE probe_results_in`); err != nil {
		return 0, fmt.Errorf("staging table: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"probe_results_in"}, resultColumns, &resultRows{rs: rs}); err != nil {
		return 0, fmt.Errorf("copy to staging: %w", err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO probe_results SELECT * FROM probe_results_in ON CONFLICT DO NOTHING`)
	if err != nil {
		return 0, fmt.Errorf("insert from staging: %w", err)
	}
	return tag.RowsAffected(), nil
}

// logIngest writes one ingest_log line per vantage in the batch.
func logIngest(ctx context.Context, tx pgx.Tx, rs []Result, inserted int64) error {
	type span struct {
		n           int
		first, last time.Time
	}
	spans := map[string]*span{}
	for i := range rs {
		r := &rs[i]
		sp := spans[r.Vantage]
		if sp == nil {
			spans[r.Vantage] = &span{n: 1, first: r.SentAt, last: r.SentAt}
			continue
		}
		sp.n++
		if r.SentAt.Before(sp.first) {
			sp.first = r.SentAt
		}
		if r.SentAt.After(sp.last) {
			sp.last = r.SentAt
		}
	}
	names := make([]string, 0, len(spans))
	for v := range spans {
		names = append(names, v)
	}
	sort.Strings(names)
	batch := &pgx.Batch{}
	for _, v := range names {
		sp := spans[v]
		// With several vantages in one batch the new-row count is only
		// known in total; it is recorded on the first line.
		ins := int64(0)
		if v == names[0] {
			ins = inserted
		}
		batch.Queue(`INSERT INTO ingest_log (vantage, results, inserted, first_sent, last_sent) VALUES ($1, $2, $3, $4, $5)`,
			v, sp.n, ins, sp.first, sp.last)
	}
	return tx.SendBatch(ctx, batch).Close()
}

func (s *Store) ensurePartitions(ctx context.Context, rs []Result) error {
	s.parts.mu.Lock()
	defer s.parts.mu.Unlock()
	if s.parts.days == nil {
		s.parts.days = map[int64]bool{}
	}
	var missing []int64
	seen := map[int64]bool{}
	for i := range rs {
		d := dayOf(rs[i].SentAt)
		if !s.parts.days[d] && !seen[d] {
			seen[d] = true
			missing = append(missing, d)
		}
	}
	for _, d := range missing {
		t := time.Unix(d*86400, 0).UTC()
		if _, err := s.pool.Exec(ctx, `SELECT cutoff_ensure_partitions($1, $1)`, t); err != nil {
			return fmt.Errorf("ingest: create partition for %s: %w", t.Format(time.DateOnly), err)
		}
		s.parts.days[d] = true
	}
	return nil
}

// resultRows feeds results to COPY without building a [][]any.
type resultRows struct {
	rs  []Result
	i   int
	row [10]any
}

func (r *resultRows) Next() bool {
	r.i++
	return r.i <= len(r.rs)
}

func (r *resultRows) Values() ([]any, error) {
	x := &r.rs[r.i-1]
	if x.Vantage == "" || !x.Addr.IsValid() || x.SentAt.IsZero() {
		return nil, fmt.Errorf("result %d: vantage, addr and sent_at are required", r.i-1)
	}
	r.row[0] = x.Vantage
	r.row[1] = x.Kind
	r.row[2] = x.Addr
	r.row[3] = int32(x.Port)
	r.row[4] = x.SentAt
	if hasRTT(x.Outcome) {
		r.row[5] = float32(x.RTT.Seconds() * 1000)
	} else {
		r.row[5] = nil
	}
	r.row[6] = x.Outcome
	if x.Responder.IsValid() {
		r.row[7] = x.Responder
	} else {
		r.row[7] = nil
	}
	if x.Kind == "dns" && x.Outcome == "reply" {
		r.row[8] = int16(x.Rcode)
	} else {
		r.row[8] = nil
	}
	r.row[9] = x.Round
	return r.row[:], nil
}

func (r *resultRows) Err() error { return nil }
