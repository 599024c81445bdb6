package spool

import (
	"fmt"
	"testing"
)

// BenchmarkAppend measures durable appends: every Append or AppendBatch
// returns only after fdatasync. One op is one record; -benchmem and the
// MB/s column come from the record size, records/s is reported directly.
// Acknowledging (which deletes segments) runs outside the timer every
// 16 MiB so the disk does not fill.
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 2s ./prober/spool/
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{256, 4 << 10, 64 << 10} {
		for _, batch := range []int{1, 16, 128} {
			b.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(b *testing.B) {
				s, err := Open(b.TempDir(), Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				rec := make([]byte, size)
				recs := make([][]byte, batch)
				for i := range recs {
					recs[i] = rec
				}
				b.SetBytes(int64(size))
				b.ResetTimer()
				var sinceAck int64
				for i := 0; i < b.N; i += batch {
					n := min(batch, b.N-i)
					first, err := s.AppendBatch(recs[:n])
					if err != nil {
						b.Fatal(err)
					}
					if sinceAck += int64(n * size); sinceAck > 16<<20 {
						b.StopTimer()
						if err := s.Ack(first + uint64(n) - 1); err != nil {
							b.Fatal(err)
						}
						sinceAck = 0
						b.StartTimer()
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}
