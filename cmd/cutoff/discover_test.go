package main

import (
	"context"
	"strings"
	"testing"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/labtest"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

func TestDiscoverBadInput(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	tests := []struct {
		name string
		give []string
		want string
	}{
		{"bad country code", []string{"--country", "K1"}, "--country"},
		{"no country", nil, "--country"},
		{"bad port", []string{"--country", "KP", "--ports", "80,http"}, `"http" is not a port`},
		{"port zero", []string{"--country", "KP", "--ports", "0"}, "not a port"},
		{"no rounds", []string{"--country", "KP", "--rounds", "0"}, "--rounds"},
		{"bad prefix", []string{"--country", "KP", "--allow-reserved", "198.18.0.0"}, "--allow-reserved"},
		{"country not watched", []string{"--country", "KP", "--db", db}, "not watched"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := cli(t, append([]string{"targets", "discover"}, tt.give...)...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want %d mentioning %q", code, stderr, exitUsage, tt.want)
			}
		})
	}
}

// TestDiscoverLab runs the census command from the lab's vp1: without
// --allow-reserved the lab's space is refused (exit 2, nothing written);
// with it every network's responsive hosts are found and stored.
func TestDiscoverLab(t *testing.T) {
	l := labtest.Up(t, lab.Default())
	db := pgtest.URL(t)
	ctx := context.Background()
	st, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	country := l.Country()
	imp := store.Import{Country: country.Code, Name: country.Name, Source: "lab"}
	for _, nw := range country.Networks {
		imp.Prefixes = append(imp.Prefixes, store.Prefix{Prefix: nw.Prefix, Registry: "lab"})
	}
	if _, err := st.ImportPrefixes(ctx, imp); err != nil {
		t.Fatal(err)
	}
	discover := func(extra ...string) (code int, stdout, stderr string) {
		args := append([]string{"targets", "discover", "--db", db, "--country", country.Code,
			"--ports", "80,443", "--rounds", "2", "--timeout", "500ms", "--rate", "5000"}, extra...)
		// The engines open their sockets in vp1's namespace; the database
		// is reached over a unix socket, which namespaces do not hide.
		if err := l.Do("vp1", func() error {
			code, stdout, stderr = cli(t, args...)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return code, stdout, stderr
	}

	code, _, stderr := discover()
	if code != exitUsage || !strings.Contains(stderr, "--allow-reserved") {
		t.Fatalf("without --allow-reserved: exit %d, %q; want 2", code, stderr)
	}
	if n := query[int64](t, db, `SELECT count(*) FROM targets`); n != 0 {
		t.Fatalf("%d targets written by a refused census", n)
	}

	code, stdout, stderr := discover("--allow-reserved", prober.Lab.String())
	if code != exitOK {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "censused 4 of 4 blocks") {
		t.Errorf("output %q", stdout)
	}
	for _, nw := range country.Networks {
		want := 0
		for _, h := range nw.Hosts {
			if (h.ICMP && !nw.FilterICMP) || len(h.TCPPorts) > 0 {
				want++
			}
		}
		got := query[int32](t, db, `SELECT ever_responsive FROM blocks WHERE block = '`+nw.Prefix.String()+`'`)
		if int(got) != want {
			t.Errorf("%s: E(b) %d, want the lab's %d responsive hosts", nw.Name, got, want)
		}
	}
	if n := query[int32](t, db, `SELECT min(census_rounds) FROM blocks`); n != 2 {
		t.Errorf("census_rounds %d, want 2", n)
	}
}
