package main

import (
	"strings"
	"testing"

	"github.com/cutoffnet/cutoff/store/pgtest"
)

// TestCorrelateBadFlags: every flag is checked before the database is
// opened, so a bad one is a usage error even when there is no database.
func TestCorrelateBadFlags(t *testing.T) {
	t.Parallel()
	noDB := "host=" + t.TempDir() + " dbname=nope connect_timeout=2"
	tests := []struct {
		name string
		give []string
		want string
	}{
		{"zero mass share", []string{"--mass-share", "0"}, "--mass-share"},
		{"negative mass share", []string{"--mass-share", "-0.5"}, "--mass-share"},
		{"mass share over one", []string{"--mass-share", "1.5"}, "--mass-share"},
		{"zero mass minimum", []string{"--mass-min", "0"}, "--mass-min"},
		{"negative mass minimum", []string{"--mass-min", "-3"}, "--mass-min"},
		{"negative result retention", []string{"--keep-results", "-1h"}, "--keep-results"},
		{"negative verdict retention", []string{"--keep-verdicts", "-24h"}, "--keep-verdicts"},
		{"zero interval", []string{"--interval", "0s"}, "--interval"},
		{"bad recompute time", []string{"--recompute-from", "yesterday"}, "not a time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := cli(t, append([]string{"correlate", "--db", noDB}, tt.give...)...)
			if code != exitUsage || !strings.Contains(out+errOut, tt.want) {
				t.Fatalf("exit %d, want %d; output should mention %q:\n%s%s", code, exitUsage, tt.want, out, errOut)
			}
		})
	}
}

// TestCorrelateGoodFlags: the edges of the accepted ranges pass.
func TestCorrelateGoodFlags(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	tests := []struct {
		name string
		give []string
	}{
		{"whole share, one block", []string{"--mass-share", "1", "--mass-min", "1"}},
		{"no retention", []string{"--keep-results", "0", "--keep-verdicts", "0"}},
		{"retention", []string{"--keep-results", "2160h", "--keep-verdicts", "8760h"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if out := mustCLI(t, append([]string{"correlate", "--db", db}, tt.give...)...); !strings.Contains(out, "nothing new") {
				t.Fatalf("correlate %v: %s", tt.give, out)
			}
		})
	}
}
