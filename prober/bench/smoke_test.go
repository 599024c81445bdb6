//go:build linux

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober/lab/labtest"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

// envSweep makes the test binary act as the sweep worker (what `cutoff
// bench sweep` is to the command), so the ICMP benchmark can start it
// inside a lab namespace.
const envSweep = "CUTOFF_BENCH_SWEEP_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(envSweep) == "1" {
		os.Exit(sweepMain(os.Args[1:]))
	}
	pgtest.Main(m)
}

func sweepMain(args []string) int {
	fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
	var s Sweep
	SweepFlags(fs, &s)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	res, err := s.Run(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// smokeRange is a small AnyIP range for the smoke run.
var smokeRange = netip.MustParsePrefix("198.19.128.0/22")

// TestBenchSmoke runs the ICMP comparison on a small range at two rates:
// every tool that ran (zmap and fping only where installed; CI does not
// install them) produced plausible figures, and a missing one is named.
func TestBenchSmoke(t *testing.T) {
	labtest.Require(t)
	cfg, err := LabConfig(smokeRange)
	if err != nil {
		t.Fatal(err)
	}
	l := labtest.Up(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	worker := []string{os.Args[0]}
	b := &ICMP{Lab: l, Rates: []int{20_000, 0}, Worker: worker, WorkerEnv: []string{envSweep + "=1"},
		Timeout: 500 * time.Millisecond, Limit: 20 * time.Second, Pause: 100 * time.Millisecond}
	rep, err := b.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := count(smokeRange, true)
	if rep.Targets != want {
		t.Errorf("targets %d, want %d", rep.Targets, want)
	}
	ran := map[string]int{}
	for _, r := range rep.Rows {
		ran[r.Tool]++
		if r.Err != "" {
			t.Errorf("%s at %s failed: %s", r.Tool, rateName(r.Rate), r.Err)
			continue
		}
		// Every address answers and nothing else is on the link.
		if r.Sent != uint64(want) || r.Replies != uint64(want) {
			t.Errorf("%s at %s: sent %d, country replied %d; want %d each", r.Tool, rateName(r.Rate), r.Sent, r.Replies, want)
		}
		if r.Matched > int64(r.Replies) || r.MatchedShare() < 0.95 {
			t.Errorf("%s at %s: matched %d of %d replies", r.Tool, rateName(r.Rate), r.Matched, r.Replies)
		}
		if r.PPS() <= 0 || r.CPU <= 0 || r.MaxRSS <= 0 {
			t.Errorf("%s at %s: %.0f probes/s, cpu %s, rss %d: want all positive", r.Tool, rateName(r.Rate), r.PPS(), r.CPU, r.MaxRSS)
		}
		if r.Rate > 0 && r.PPS() > 2*float64(r.Rate) {
			t.Errorf("%s at %s: %.0f probes/s, over twice the rate asked", r.Tool, rateName(r.Rate), r.PPS())
		}
	}
	if ran["cutoff"] != 2 {
		t.Errorf("cutoff ran %d times, want 2", ran["cutoff"])
	}
	for _, tool := range []string{"zmap", "fping"} {
		_, skipped := rep.Skipped[tool]
		if skipped == (ran[tool] == 2) {
			t.Errorf("%s: ran %d times, skipped %v: want one or the other", tool, ran[tool], skipped)
		}
	}
	var out bytes.Buffer
	rep.Write(&out)
	found := false
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		found = found || len(f) == 12 && f[0] == "cutoff" && f[1] == "max" && f[10] == "1.00"
	}
	if !found {
		t.Errorf("table lacks cutoff's max row with ratio 1.00:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}

// A peer tool that is not installed is skipped and named, not a failure.
func TestBenchMissingTool(t *testing.T) {
	labtest.Require(t)
	cfg, err := LabConfig(smokeRange)
	if err != nil {
		t.Fatal(err)
	}
	l := labtest.Up(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := &ICMP{Lab: l, Rates: []int{0}, Tools: []string{"cutoff", "zmap"}, Worker: []string{os.Args[0]},
		WorkerEnv: []string{envSweep + "=1"}, Timeout: 500 * time.Millisecond, Limit: 20 * time.Second,
		LookPath: func(string) (string, error) { return "", errors.New("not found") }}
	rep, err := b.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 1 || rep.Rows[0].Tool != "cutoff" || rep.Rows[0].Err != "" {
		t.Errorf("rows %+v, want cutoff's alone", rep.Rows)
	}
	var out bytes.Buffer
	rep.Write(&out)
	if !strings.Contains(out.String(), "zmap: skipped, not installed (apt-get install -y zmap)") {
		t.Errorf("table does not name the missing tool:\n%s", out.String())
	}
}

// The benchmark lab keeps the country's networks out of the AnyIP range
// and stays inside 198.18.0.0/15.
func TestLabConfig(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		wantErr bool
	}{
		{"default /16", "198.19.0.0/16", false},
		{"upper /17", "198.19.128.0/17", false},
		{"over the vantages", "198.18.0.0/16", true},
		{"outside the lab", "10.0.0.0/16", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := LabConfig(netip.MustParsePrefix(tt.give))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			for _, n := range cfg.Country.Networks {
				if n.Prefix.Overlaps(cfg.Country.AnyIP) {
					t.Errorf("network %s overlaps the range %s", n.Prefix, cfg.Country.AnyIP)
				}
			}
		})
	}
}

// The sweep worker refuses a range outside the lab before opening a
// socket.
func TestSweepRefusesOutsideLab(t *testing.T) {
	_, err := Sweep{Range: netip.MustParsePrefix("8.8.8.0/24"), Timeout: time.Second, Limit: time.Second, Mode: "raw"}.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not inside the lab") {
		t.Errorf("err = %v, want a refusal", err)
	}
}

func TestIngestSmoke(t *testing.T) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 30_000
	rep, err := Ingest{DB: url, Results: n, Batch: 5000}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]IngestFigure{"agent": rep.Agent, "raw": rep.Raw} {
		if f.Results != n || f.Ingested != n || f.Rate() <= 0 {
			t.Errorf("%s: %d handed, %d ingested at %.0f/s; want %d, %d, positive", name, f.Results, f.Ingested, f.Rate(), n, n)
		}
	}
	if rep.Raw.Batches != n/5000 {
		t.Errorf("raw path wrote %d batches, want %d", rep.Raw.Batches, n/5000)
	}
	if rep.Fsync != "on" && rep.Fsync != "off" {
		t.Errorf("fsync %q, want on or off", rep.Fsync)
	}
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var rows int
	if err := st.Pool().QueryRow(ctx, `SELECT count(*) FROM probe_results`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 2*n {
		t.Errorf("database holds %d results, want %d", rows, 2*n)
	}
	var out bytes.Buffer
	rep.Write(&out)
	if !strings.Contains(out.String(), "fsync="+rep.Fsync) {
		t.Errorf("output does not say whether fsync is on:\n%s", out.String())
	}
}

func TestScaleSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 5000
	rep, err := Scale{Blocks: n, Rounds: 1}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b := rep.BytesPerBlock(); b <= 0 || b > 4096 {
		t.Errorf("%.0f bytes per block, want a plausible positive figure", b)
	}
	if rep.CPU <= 0 || rep.Wall <= 0 || rep.Probes < n || rep.Verdicts < n*9/10 {
		t.Errorf("cpu %s, wall %s, %d probes, %d verdicts for %d blocks in one round", rep.CPU, rep.Wall, rep.Probes, rep.Verdicts, n)
	}
}
