package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProbeBadInput: every mistake in `cutoff probe`'s flags or config
// file is caught before anything connects or probes, exits 2 and names
// the flag or key.
func TestProbeBadInput(t *testing.T) {
	dir := t.TempDir()
	config := func(name, yaml string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	// No database is reachable here: a command that got past validation
	// would fail with exit 1, not 2.
	db := "host=" + dir + " dbname=nope connect_timeout=1"
	tests := []struct {
		name string
		give []string
		want string
	}{
		{"missing vantage", []string{}, "--vantage"},
		{"bad vantage", []string{"--vantage", "vp 1"}, `vantage "vp 1"`},
		{"bad country", []string{"--vantage", "vp1", "--country", "K1"}, `country "K1": not a two-letter code`},
		{"allow-reserved with host bits", []string{"--vantage", "vp1", "--allow-reserved", "198.18.0.1/15"}, "allow-reserved: 198.18.0.1/15 has host bits set"},
		{"allow-reserved not a prefix", []string{"--vantage", "vp1", "--allow-reserved", "lab"}, `allow-reserved: "lab" is not a CIDR prefix`},
		{"round too short", []string{"--vantage", "vp1", "--round", "100ms", "--timeout", "50ms"}, "round 100ms"},
		{"timeout zero", []string{"--vantage", "vp1", "--timeout", "0s"}, "timeout 0s"},
		{"timeout over the round", []string{"--vantage", "vp1", "--round", "2s", "--timeout", "5s"}, "timeout 5s"},
		{"rate zero with a short round", []string{"--vantage", "vp1", "--round", "2s", "--timeout", "1s", "--rate", "0"}, "rate 0"},
		{"flush zero with a short round", []string{"--vantage", "vp1", "--round", "2s", "--timeout", "1s", "--flush", "0s"}, "flush 0s"},
		{"bad icmp-mode", []string{"--vantage", "vp1", "--icmp-mode", "fast"}, `icmp-mode "fast"`},
		{"bad duration flag", []string{"--vantage", "vp1", "--round", "soon"}, "-round"},
		{"unknown YAML key", []string{"--config", config("unknown.yaml", "vantage: vp1\nroud: 2m\n")}, "field roud not found"},
		{"bad YAML value", []string{"--config", config("value.yaml", "vantage: vp1\ntimeout: fast\n")}, "timeout (line 2)"},
		{"bad value in YAML", []string{"--config", config("rate.yaml", "vantage: vp1\nround: 30s\nrate: 0\n")}, "rate 0"},
		{"missing config file", []string{"--config", filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
		{"stray argument", []string{"--vantage", "vp1", "now"}, `unexpected argument "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"probe", "--db", db, "--spool", t.TempDir()}, tt.give...)
			code, out, errOut := cli(t, args...)
			if code != exitUsage || !strings.Contains(out+errOut, tt.want) {
				t.Fatalf("cutoff %s: exit %d, want %d naming %q:\n%s%s", strings.Join(args, " "), code, exitUsage, tt.want, out, errOut)
			}
		})
	}
}

// TestProbeReplayRejectedNothing: --replay-rejected needs no vantage and
// says what it did; with nothing set aside it does not even connect.
func TestProbeReplayRejectedNothing(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := cli(t, "probe", "--replay-rejected", "--spool", dir, "--db", "host="+dir+" dbname=nope connect_timeout=1")
	if code != exitOK || !strings.Contains(out, "0 rejected batch files") {
		t.Fatalf("exit %d:\n%s%s", code, out, errOut)
	}
}
