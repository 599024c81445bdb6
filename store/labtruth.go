package store

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// LabTruth is a row of lab_truth: one fault a lab scenario injected.
type LabTruth struct {
	RunID      string
	Seq        int
	Scenario   string
	Country    string
	Target     string
	Fault      string
	Detail     string
	Prefixes   []netip.Prefix
	Line       int
	StartedAt  time.Time
	EndedAt    *time.Time
	DoneAt     *time.Time
	StoryStart *time.Time
	StoryEnd   *time.Time
}

// RecordLabTruth inserts a fault, or updates it (end, done, detail) when
// (RunID, Seq) is already there: the lab records a fault when it takes
// effect and again when it changes.
func (s *Store) RecordLabTruth(ctx context.Context, t LabTruth) error {
	prefixes := t.Prefixes
	if prefixes == nil {
		prefixes = []netip.Prefix{}
	}
	_, err := s.pool.Exec(ctx, `
INSERT INTO lab_truth (run_id, seq, scenario, country, target, fault, detail, prefixes, line,
                       started_at, ended_at, done_at, story_start, story_end)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (run_id, seq) DO UPDATE SET
    detail = excluded.detail, ended_at = excluded.ended_at, done_at = excluded.done_at,
    story_end = excluded.story_end`,
		t.RunID, t.Seq, t.Scenario, t.Country, t.Target, t.Fault, t.Detail, prefixes, t.Line,
		t.StartedAt, t.EndedAt, t.DoneAt, t.StoryStart, t.StoryEnd)
	if err != nil {
		return fmt.Errorf("record lab truth: %w", err)
	}
	return nil
}

// LabTruthOf returns a run's faults in order.
func (s *Store) LabTruthOf(ctx context.Context, runID string) ([]LabTruth, error) {
	rows, err := s.pool.Query(ctx, `
SELECT run_id, seq, scenario, country, target, fault, detail, prefixes, line,
       started_at, ended_at, done_at, story_start, story_end
FROM lab_truth WHERE run_id = $1 ORDER BY seq`, runID)
	if err != nil {
		return nil, fmt.Errorf("read lab truth: %w", err)
	}
	defer rows.Close()
	var out []LabTruth
	for rows.Next() {
		var t LabTruth
		if err := rows.Scan(&t.RunID, &t.Seq, &t.Scenario, &t.Country, &t.Target, &t.Fault, &t.Detail,
			&t.Prefixes, &t.Line, &t.StartedAt, &t.EndedAt, &t.DoneAt, &t.StoryStart, &t.StoryEnd); err != nil {
			return nil, fmt.Errorf("read lab truth: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read lab truth: %w", err)
	}
	return out, nil
}
