package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/store/pgtest"
)

// BenchmarkIngest measures results per second through Ingest into a local
// PostgreSQL: the fast path (new results) and the dedup path (a replay in
// which half the batch is already stored).
//
//	go test ./store -run '^$' -bench Ingest -benchtime 20x
func BenchmarkIngest(b *testing.B) {
	for _, bc := range []struct {
		name    string
		batch   int
		overlap bool
	}{
		{"new/batch=10000", 10_000, false},
		{"new/batch=50000", 50_000, false},
		{"replay-half/batch=10000", 10_000, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			st := pgtest.New(b)
			base := time.Now().UTC().Truncate(time.Hour)
			step := time.Duration(bc.batch) * time.Millisecond
			i := 0
			var total int64
			for b.Loop() {
				at := base.Add(time.Duration(i) * step)
				if bc.overlap {
					at = base.Add(time.Duration(i) * step / 2)
				}
				rs := sample(bc.batch, at)
				n, err := st.IngestResults(ctx, rs)
				if err != nil {
					b.Fatal(err)
				}
				total += int64(len(rs))
				_ = n
				i++
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "results/s")
		})
	}
}
