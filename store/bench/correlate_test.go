package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestCorrelateSmoke runs the correlator benchmark on a small world that
// still holds the country outage: figures are produced, the outage is
// found, and a recompute over what is stored changes nothing.
func TestCorrelateSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := Correlate{DB: pgtest.URL(t), Blocks: 600, Span: 17 * time.Hour}
	rep, err := c.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rounds := int64(17 * time.Hour / (11 * time.Minute))
	if want := 600 * 2 * rounds; rep.Observations != want {
		t.Errorf("%d verdicts ingested, want %d", rep.Observations, want)
	}
	if rep.WantOutages != 1 || rep.CountryOutages != 1 {
		t.Errorf("%d country outages derived, want %d (and 1 in the world)", rep.CountryOutages, rep.WantOutages)
	}
	if rep.First.Observations == 0 || Rate(rep.First) <= 0 || rep.First.Inserted == 0 {
		t.Errorf("first pass %+v: want verdicts folded and rows written", rep.First)
	}
	if rep.Recompute.Inserted != 0 || rep.Recompute.Deleted != 0 || Rate(rep.Recompute) <= 0 {
		t.Errorf("recompute %+v: want nothing changed", rep.Recompute)
	}
	if rep.Next.Observations == 0 || rep.Next.Observations >= rep.First.Observations {
		t.Errorf("next pass folded %d verdicts, want some but fewer than the first pass's %d", rep.Next.Observations, rep.First.Observations)
	}
	if rep.PeakHeap == 0 {
		t.Error("no heap figure")
	}
	var out bytes.Buffer
	rep.Write(&out)
	if !strings.Contains(out.String(), "1 country outage(s) derived (the world has 1)") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestCoverBlocks(t *testing.T) {
	tests := []struct {
		name string
		give int
		want string
	}{
		{"one", 1, "[240.1.0.0/24]"},
		{"three", 3, "[240.1.0.0/23 240.1.2.0/24]"},
		{"160", 160, "[240.1.0.0/17 240.1.128.0/19]"},
		{"255", 255, "[240.1.0.0/17 240.1.128.0/18 240.1.192.0/19 240.1.224.0/20 240.1.240.0/21 240.1.248.0/22 240.1.252.0/23 240.1.254.0/24]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := coverBlocks(netip.MustParseAddr("240.1.0.0"), tt.give)
			if fmt.Sprint(got) != tt.want {
				t.Errorf("coverBlocks = %v, want %s", got, tt.want)
			}
			n := 0
			for _, p := range got {
				n += 1 << (24 - p.Bits())
			}
			if n != tt.give {
				t.Errorf("covers %d blocks, want %d", n, tt.give)
			}
		})
	}
}

// The world's truth: which blocks are dark when.
func TestWorldDown(t *testing.T) {
	w := newWorld(Correlate{Blocks: 5000, Vantages: 2, Span: 24 * time.Hour, Round: 11 * time.Minute})
	tests := []struct {
		name  string
		block int
		at    time.Duration
		want  bool
	}{
		{"country XA before", 0, 13*time.Hour + 59*time.Minute, false},
		{"country XA during", 0, 15 * time.Hour, true},
		{"country XA other network", 10*256 + 3, 14 * time.Hour, true},
		{"country XA after", 0, 16 * time.Hour, false},
		{"country XB during XA's outage", 256, 15 * time.Hour, false},
		{"network 11 (XB) at 02:10", 11*256 + 5, 2*time.Hour + 10*time.Minute, true},
		{"network 11 (XB) at 02:40", 11*256 + 5, 2*time.Hour + 40*time.Minute, false},
		{"network 21 (XB) at 02:10", 21*256 + 5, 2*time.Hour + 10*time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := w.down(tt.block, tt.at); got != tt.want {
				t.Errorf("down(%d, %s) = %v, want %v", tt.block, tt.at, got, tt.want)
			}
		})
	}
}
