package main

import (
	"strings"
	"testing"

	"github.com/cutoffnet/cutoff/store/pgtest"
)

func TestBenchUsage(t *testing.T) {
	tests := []struct {
		name string
		give []string
		want string
	}{
		{"bad rate", []string{"bench", "icmp", "--rates", "10000,fast"}, `"fast" is not a rate`},
		{"unknown tool", []string{"bench", "icmp", "--tools", "cutoff,masscan"}, `unknown tool "masscan"`},
		{"range too large", []string{"bench", "icmp", "--range", "198.18.0.0/15"}, "at most a /16"},
		{"host bits", []string{"bench", "icmp", "--range", "198.19.0.1/16"}, "without host bits"},
		{"scale too large", []string{"bench", "scale", "--blocks", "2000000"}, "--blocks must be 1 to"},
		{"correlate span", []string{"bench", "correlate", "--span", "1m"}, "at least one round"},
		{"ingest size", []string{"bench", "ingest", "--results", "0"}, "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := cli(t, tt.give...)
			if code != exitUsage || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, exitUsage, tt.want)
			}
		})
	}
}

// The command wires the benchmarks: small runs print their figures.
func TestBenchCommands(t *testing.T) {
	server := pgtest.Cluster(t).URL("postgres")
	out := mustCLI(t, "bench", "scale", "--blocks", "2000", "--rounds", "1")
	if !strings.Contains(out, "bytes per block") || !strings.Contains(out, "per block per round") {
		t.Errorf("scale output:\n%s", out)
	}
	out = mustCLI(t, "bench", "ingest", "--db", server, "--results", "20000", "--batch", "5000")
	if !strings.Contains(out, "fsync=") || !strings.Contains(out, "agent path") || !strings.Contains(out, "store.Ingest") {
		t.Errorf("ingest output:\n%s", out)
	}
	out = mustCLI(t, "bench", "correlate", "--db", server, "--blocks", "300", "--span", "2h")
	if !strings.Contains(out, "first pass") || !strings.Contains(out, "recompute") || !strings.Contains(out, "verdicts/s") {
		t.Errorf("correlate output:\n%s", out)
	}
	// The scratch databases are gone.
	if n := query[int](t, server, `SELECT count(*) FROM pg_database WHERE datname LIKE 'cutoff_bench_%'`); n != 0 {
		t.Errorf("%d scratch databases left behind", n)
	}
}
