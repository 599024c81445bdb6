package store

import (
	"context"
	"fmt"
	"time"
)

// Heartbeat is what a vantage reports about itself.
type Heartbeat struct {
	Vantage        string
	Round, Timeout time.Duration
	// ClockOffset is the vantage's clock minus the database's; nil when
	// it could not be measured.
	ClockOffset  *time.Duration
	SpoolBytes   int64
	SpoolRecords int64
	SpoolOldest  time.Time // zero when nothing waits
	ProbesSent   int64
	Countries    []string
	Version      string
	Hostname     string
}

// Beat registers the vantage or refreshes its row (through a function a
// prober's role may call; it cannot write the table otherwise).
func (s *Store) Beat(ctx context.Context, h Heartbeat) error {
	var offset, oldest any
	if h.ClockOffset != nil {
		offset = float32(float64(*h.ClockOffset) / float64(time.Millisecond))
	}
	if !h.SpoolOldest.IsZero() {
		oldest = h.SpoolOldest
	}
	countries := h.Countries
	if countries == nil {
		countries = []string{}
	}
	_, err := s.pool.Exec(ctx, `SELECT cutoff_vantage_heartbeat($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		h.Vantage, float32(h.Round.Seconds()), float32(h.Timeout.Seconds()), offset,
		h.SpoolBytes, h.SpoolRecords, oldest, h.ProbesSent, countries, h.Version, h.Hostname)
	if err != nil {
		return fmt.Errorf("heartbeat of %s: %w", h.Vantage, err)
	}
	return nil
}

// ClockOffset measures this machine's clock against the database's, the
// way NTP does: of a few exchanges, the one with the shortest round trip
// is trusted, and the server's reading is taken to fall in its middle.
func (s *Store) ClockOffset(ctx context.Context, now func() time.Time) (offset, rtt time.Duration, err error) {
	if now == nil {
		now = time.Now
	}
	rtt = -1
	for range 3 {
		var server time.Time
		t0 := now()
		if err := s.pool.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&server); err != nil {
			return 0, 0, fmt.Errorf("clock offset: %w", err)
		}
		t1 := now()
		if d := t1.Sub(t0); rtt < 0 || d < rtt {
			rtt = d
			offset = t0.Add(d / 2).Sub(server)
		}
	}
	return offset, rtt, nil
}
