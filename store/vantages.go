package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// VantageStatus is what the center knows of one vantage. The JSON names
// are what `cutoff vantage list --json` prints: durations in nanoseconds
// (fields ending in _ns), times in RFC 3339, null when unknown.
type VantageStatus struct {
	Name            string         `json:"name"`
	FirstSeen       time.Time      `json:"first_seen"`
	LastSeen        time.Time      `json:"last_seen"`
	ResultsLastHour int64          `json:"results_last_hour"`
	SpoolBytes      int64          `json:"spool_bytes"`
	SpoolRecords    int64          `json:"spool_records"`
	SpoolOldest     *time.Time     `json:"spool_oldest"`
	ClockOffset     *time.Duration `json:"clock_offset_ns"`
	Round           time.Duration  `json:"round_ns"`
	Timeout         time.Duration  `json:"timeout_ns"`
	ProbesSent      int64          `json:"probes_sent"`
	Countries       []string       `json:"countries"` // empty: all
	Version         string         `json:"version"`
	Hostname        string         `json:"hostname"`
	// Health is the correlator's latest verdict: healthy, unhealthy,
	// unknown, or "" when it has none.
	Health       string     `json:"health"`
	HealthReason string     `json:"health_reason"`
	HealthSince  *time.Time `json:"health_since"`
}

// Vantages lists every vantage with its last contact, recent results,
// reported spool backlog, clock offset and health.
func (s *Store) Vantages(ctx context.Context) ([]VantageStatus, error) {
	rows, err := s.pool.Query(ctx, `SELECT v.name, v.first_seen, v.last_seen,
			(SELECT count(*) FROM probe_results r WHERE r.sent_at > now() - interval '1 hour' AND r.vantage = v.name),
			v.spool_bytes, v.spool_records, v.spool_oldest, v.clock_offset_ms, coalesce(v.round_seconds, 0), coalesce(v.timeout_seconds, 0),
			v.probes_sent, v.countries, v.version, v.hostname,
			coalesce(h.state, ''), coalesce(h.reason, ''), lower(h.during)
		FROM vantages v
		LEFT JOIN LATERAL (SELECT state, reason, during FROM vantage_health h
			WHERE h.vantage = v.name ORDER BY lower(during) DESC LIMIT 1) h ON true
		ORDER BY v.name`)
	if err != nil {
		return nil, fmt.Errorf("list vantages: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (VantageStatus, error) {
		var v VantageStatus
		var oldest, since pgtype.Timestamptz
		var offset pgtype.Float4
		var round, timeout float32
		err := r.Scan(&v.Name, &v.FirstSeen, &v.LastSeen, &v.ResultsLastHour, &v.SpoolBytes, &v.SpoolRecords, &oldest,
			&offset, &round, &timeout, &v.ProbesSent, &v.Countries, &v.Version, &v.Hostname, &v.Health, &v.HealthReason, &since)
		if oldest.Valid {
			v.SpoolOldest = &oldest.Time
		}
		if offset.Valid {
			d := time.Duration(float64(offset.Float32) * float64(time.Millisecond))
			v.ClockOffset = &d
		}
		if since.Valid {
			v.HealthSince = &since.Time
		}
		v.Round = time.Duration(float64(round) * float64(time.Second))
		v.Timeout = time.Duration(float64(timeout) * float64(time.Second))
		return v, err
	})
}
