package agent

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober/spool"
)

// TestClockOffset: the heartbeat measures this vantage's clock against
// the database's, records the offset on its vantage row and in
// cutoff_clock_offset_seconds, and warns when it is over 1 s either way.
// The skew is injected through the agent's clock, not the system's.
func TestClockOffset(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url, st := testStore(ctx, t)
	tests := []struct {
		name string
		skew time.Duration
		warn bool
	}{
		{"in sync", 0, false},
		{"under a second ahead", 600 * time.Millisecond, false},
		{"3 s ahead", 3 * time.Second, true},
		{"2 s behind", -2 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := pipeConfig(t, url)
			cfg.Vantage = "clock-" + strings.ReplaceAll(tt.name, " ", "-")
			var log syncBuffer
			a, err := New(cfg, slog.New(slog.NewTextHandler(&log, nil)), nil)
			if err != nil {
				t.Fatal(err)
			}
			sp, err := spool.Open(cfg.spoolDir(), spool.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer sp.Close()
			a.st, a.sp, a.m = st, sp, newMetrics(a.reg, sp, nil)
			a.now = func() time.Time { return time.Now().Add(tt.skew) }
			a.beat(ctx)

			var ms float64
			if err := st.Pool().QueryRow(ctx, `SELECT clock_offset_ms FROM vantages WHERE name = $1`, cfg.Vantage).Scan(&ms); err != nil {
				t.Fatal(err)
			}
			// The measurement's own error is half the round trip to a
			// local server: well under 100 ms.
			want := float64(tt.skew.Milliseconds())
			if ms < want-100 || ms > want+100 {
				t.Errorf("clock_offset_ms %v, want %v", ms, want)
			}
			if got := value(t, a.m.clock); got < want/1000-0.1 || got > want/1000+0.1 {
				t.Errorf("cutoff_clock_offset_seconds %v, want %v", got, want/1000)
			}
			if warned := strings.Contains(log.String(), "clock offset against the database is over 1 s"); warned != tt.warn {
				t.Errorf("warned %v, want %v:\n%s", warned, tt.warn, log.String())
			}
		})
	}
}
