package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
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

// Observation is one visit's verdict on one block, as stored in
// observations. A verdict on a pooled unit is one Observation per block.
type Observation struct {
	Vantage string
	Block   netip.Prefix
	Unit    netip.Prefix // the judged unit; equal to Block unless pooled
	At      time.Time    // when the verdict was reached
	SentAt  time.Time    // when the visit's first probe left
	Round   int64
	State   string // up, down, uncertain or unmeasurable
	Belief  float64
	Probes  int
	Replies int
}

var observationColumns = []string{"vantage", "block", "unit", "at", "sent_at", "round", "state", "belief", "probes", "replies"}

// Batch is what a vantage sends in one go.
type Batch struct {
	Results      []Result
	Observations []Observation
}

// Len is the number of rows in the batch.
func (b *Batch) Len() int { return len(b.Results) + len(b.Observations) }

// Counts says how many rows of a batch were new.
type Counts struct {
	Results, Observations int64
}

// table describes one day-partitioned table that Ingest writes.
type table struct {
	name    string
	columns []string
	rows    func() pgx.CopyFromSource
	n       int
	times   func(i int) time.Time // the partition key of row i
	vantage func(i int) string
}

func (b *Batch) tables() []table {
	rs, os := b.Results, b.Observations
	return []table{
		{name: "probe_results", columns: resultColumns, n: len(rs),
			rows:    func() pgx.CopyFromSource { return &resultRows{rs: rs} },
			times:   func(i int) time.Time { return rs[i].SentAt },
			vantage: func(i int) string { return rs[i].Vantage }},
		{name: "observations", columns: observationColumns, n: len(os),
			rows:    func() pgx.CopyFromSource { return &observationRows{os: os} },
			times:   func(i int) time.Time { return os[i].At },
			vantage: func(i int) string { return os[i].Vantage }},
	}
}

// Ingest stores a batch, each row exactly once: rows already stored (a
// vantage re-sending after a lost acknowledgement, or replaying its spool)
// are dropped, not counted and not an error. It returns how many rows were
// new. The whole batch commits or none of it does, together with its lines
// in ingest_log, which tell the correlator what changed.
//
// The fast path COPYs straight into each table; only when that meets a
// duplicate does the table's share go through a staging table and
// INSERT … ON CONFLICT DO NOTHING.
func (s *Store) Ingest(ctx context.Context, b Batch) (Counts, error) {
	if b.Len() == 0 {
		return Counts{}, nil
	}
	if err := s.ensurePartitions(ctx, &b); err != nil {
		return Counts{}, err
	}
	n, err := s.ingest(ctx, &b)
	if noPartition(err) {
		// "no partition of relation found for row": a partition was
		// dropped under us (retention). Forget what we knew and retry once.
		s.parts.mu.Lock()
		s.parts.days = nil
		s.parts.mu.Unlock()
		if err := s.ensurePartitions(ctx, &b); err != nil {
			return Counts{}, err
		}
		n, err = s.ingest(ctx, &b)
	}
	if badData(err) {
		// A data exception or a constraint the batch breaks: retrying
		// will not help.
		return n, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return n, err
}

// noPartition says whether err is PostgreSQL finding no partition for a
// row (SQLSTATE 23514 with that message, not a CHECK constraint).
func noPartition(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23514" && strings.Contains(pgErr.Message, "no partition")
}

// badData says whether the server refused a batch because of what is in
// it: a data exception (class 22) or a broken integrity constraint (class
// 23). Not a duplicate key (Ingest skips those, and one surfacing here
// comes from a race, worth retrying), and not a missing partition (the
// schema is short of one: retrying once it is made stores the rows).
// Everything else, permissions and read-only servers included, is a state
// of the server that can change, never a reason to give up on the rows.
func badData(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) != 5 {
		return false
	}
	switch {
	case pgErr.Code == "23505", noPartition(err):
		return false
	case pgErr.Code[:2] == "22", pgErr.Code[:2] == "23":
		return true
	}
	return false
}

// IngestResults stores results alone; see Ingest.
func (s *Store) IngestResults(ctx context.Context, rs []Result) (int64, error) {
	n, err := s.Ingest(ctx, Batch{Results: rs})
	return n.Results, err
}

func (s *Store) ingest(ctx context.Context, b *Batch) (Counts, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return Counts{}, fmt.Errorf("ingest: %w", err)
	}
	defer tx.Rollback(ctx)
	var inserted [2]int64
	for i, t := range b.tables() {
		if t.n == 0 {
			continue
		}
		n, err := copyDirect(ctx, tx, t)
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" {
			n, err = copyDedup(ctx, tx, t)
		}
		if err != nil {
			return Counts{}, fmt.Errorf("ingest %d rows into %s: %w", t.n, t.name, err)
		}
		if err := logIngest(ctx, tx, t, n); err != nil {
			return Counts{}, fmt.Errorf("ingest: log: %w", err)
		}
		inserted[i] = n
	}
	if err := tx.Commit(ctx); err != nil {
		return Counts{}, fmt.Errorf("ingest: commit: %w", err)
	}
	return Counts{Results: inserted[0], Observations: inserted[1]}, nil
}

// copyDirect copies into the table inside a savepoint, so that a
// duplicate key leaves the transaction usable for the slow path.
func copyDirect(ctx context.Context, tx pgx.Tx, t table) (int64, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return 0, err
	}
	n, err := sp.CopyFrom(ctx, pgx.Identifier{t.name}, t.columns, t.rows())
	if err != nil {
		sp.Rollback(ctx)
		return 0, err
	}
	return n, sp.Commit(ctx)
}

func copyDedup(ctx context.Context, tx pgx.Tx, t table) (int64, error) {
	staging := t.name + "_in"
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS `+staging+`
		(LIKE `+t.name+` INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`); err != nil {
		return 0, fmt.Errorf("staging table: %w", err)
	}
	if _, err := tx.Exec(ctx, `TRUNCATE `+staging); err != nil {
		return 0, fmt.Errorf("staging table: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{staging}, t.columns, t.rows()); err != nil {
		return 0, fmt.Errorf("copy to staging: %w", err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO `+t.name+` SELECT * FROM `+staging+` ON CONFLICT DO NOTHING`)
	if err != nil {
		return 0, fmt.Errorf("insert from staging: %w", err)
	}
	return tag.RowsAffected(), nil
}

// logIngest writes one ingest_log line per vantage of the table's rows.
func logIngest(ctx context.Context, tx pgx.Tx, t table, inserted int64) error {
	type span struct {
		n           int
		first, last time.Time
	}
	spans := map[string]*span{}
	for i := 0; i < t.n; i++ {
		v, at := t.vantage(i), t.times(i)
		sp := spans[v]
		if sp == nil {
			spans[v] = &span{n: 1, first: at, last: at}
			continue
		}
		sp.n++
		if at.Before(sp.first) {
			sp.first = at
		}
		if at.After(sp.last) {
			sp.last = at
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
		batch.Queue(`INSERT INTO ingest_log (tbl, vantage, results, inserted, first_sent, last_sent) VALUES ($1, $2, $3, $4, $5, $6)`,
			t.name, v, sp.n, ins, sp.first, sp.last)
	}
	return tx.SendBatch(ctx, batch).Close()
}

func (s *Store) ensurePartitions(ctx context.Context, b *Batch) error {
	s.parts.mu.Lock()
	defer s.parts.mu.Unlock()
	if s.parts.days == nil {
		s.parts.days = map[int64]bool{}
	}
	var missing []int64
	seen := map[int64]bool{}
	for _, t := range b.tables() {
		for i := 0; i < t.n; i++ {
			d := dayOf(t.times(i))
			if !s.parts.days[d] && !seen[d] {
				seen[d] = true
				missing = append(missing, d)
			}
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
		return nil, fmt.Errorf("%w: result %d: vantage, addr and sent_at are required", ErrInvalid, r.i-1)
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

// observationRows feeds observations to COPY.
type observationRows struct {
	os  []Observation
	i   int
	row [10]any
}

func (r *observationRows) Next() bool {
	r.i++
	return r.i <= len(r.os)
}

func (r *observationRows) Values() ([]any, error) {
	x := &r.os[r.i-1]
	if x.Vantage == "" || !x.Block.IsValid() || x.At.IsZero() {
		return nil, fmt.Errorf("%w: observation %d: vantage, block and at are required", ErrInvalid, r.i-1)
	}
	unit := x.Unit
	if !unit.IsValid() {
		unit = x.Block
	}
	sent := x.SentAt
	if sent.IsZero() {
		sent = x.At
	}
	r.row[0] = x.Vantage
	r.row[1] = x.Block
	r.row[2] = unit
	r.row[3] = x.At
	r.row[4] = sent
	r.row[5] = x.Round
	r.row[6] = x.State
	r.row[7] = float32(x.Belief)
	r.row[8] = int16(x.Probes)
	r.row[9] = int16(x.Replies)
	return r.row[:], nil
}

func (r *observationRows) Err() error { return nil }

// DropPartitions drops the daily partitions of table ("probe_results",
// "observations", or "" for both) that end at or before the given time,
// and returns how many it dropped. Raw results are usually kept for less
// time than verdicts: the correlator needs only the verdicts and the
// control results to recompute.
func (s *Store) DropPartitions(ctx context.Context, table string, before time.Time) (int, error) {
	var parent any
	if table != "" {
		parent = table
	}
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT cutoff_drop_partitions($1, $2)`, before, parent).Scan(&n); err != nil {
		return 0, fmt.Errorf("drop partitions of %s before %s: %w", table, before.Format(time.DateOnly), err)
	}
	s.parts.mu.Lock()
	s.parts.days = nil // forget: the next ingest asks again
	s.parts.mu.Unlock()
	return n, nil
}
