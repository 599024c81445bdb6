package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cutoffnet/cutoff/store/pgtest"
)

func TestMain(m *testing.M) {
	if os.Getenv(asCLI) == "1" {
		// As main does: SIGTERM and ^C end the command cleanly.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	// Children this test binary starts (the lab's serve daemon, probers,
	// the correlator) are the cutoff binary: the test binary acting as
	// the CLI. This process has already decided it runs the tests.
	os.Setenv(asCLI, "1")
	pgtest.Main(m)
}

const (
	apnicSample = "../../store/rir/testdata/delegated-apnic-extended-sample"
	kpList      = "../../store/rir/testdata/kp-ipv4-aggregated.txt"
)

// cli runs cutoff in-process and returns its exit code and output.
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	// Long enough for the demo's replay; each test bounds its own work.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := cli(t, args...)
	if code != 0 {
		t.Fatalf("cutoff %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func query[T any](t *testing.T, db, sql string) T {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v T
	if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func TestHelpPrintedOnce(t *testing.T) {
	code, out, errOut := cli(t, "--help")
	if code != exitOK || strings.Count(out+errOut, "Commands:") != 1 {
		t.Fatalf("--help: exit %d, printed %d times", code, strings.Count(out+errOut, "Commands:"))
	}
}

func TestHelpAndUsage(t *testing.T) {
	tests := []struct {
		name string
		give []string
		code int
		want string
	}{
		{"no command", nil, exitUsage, "Commands:"},
		{"help", []string{"--help"}, exitOK, "Commands:"},
		{"bad global flag", []string{"--verbose", "migrate"}, exitUsage, "run 'cutoff --help'"},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"group without subcommand", []string{"targets"}, exitUsage, "import"},
		{"leaf help", []string{"targets", "import", "--help"}, exitOK, "-rir"},
		{"migrate help", []string{"migrate", "-h"}, exitOK, "-db"},
		{"bad flag", []string{"targets", "import", "--bogus"}, exitUsage, "flag provided but not defined"},
		{"bad log level", []string{"--log-level", "loud", "migrate"}, exitUsage, "log-level"},
		{"stray argument", []string{"migrate", "now"}, exitUsage, `unexpected argument "now"`},
		{"bad country", []string{"targets", "import", "--country", "K1", "--rir", apnicSample}, exitUsage, "two-letter"},
		{"no inputs", []string{"targets", "import", "--country", "KP"}, exitUsage, "--rir or --cidr"},
		{"missing file", []string{"targets", "import", "--country", "KP", "--rir", "/nonexistent/delegated-apnic"}, exitUsage, "open /nonexistent/delegated-apnic: no such file"},
		{"bad address", []string{"targets", "add", "--country", "KP", "--kind", "tcp", "--addr", "175.45.176.300", "--port", "80"}, exitUsage, "not an IP address"},
		{"tcp without port", []string{"targets", "add", "--country", "KP", "--kind", "tcp", "--addr", "175.45.176.1"}, exitUsage, "need a port"},
		{"unknown kind", []string{"targets", "add", "--country", "KP", "--kind", "udp", "--addr", "175.45.176.1"}, exitUsage, "not icmp, tcp or dns"},
		{"correlate bad interval", []string{"correlate", "--interval", "0s"}, exitUsage, "--interval"},
		{"correlate bad webhook", []string{"correlate", "--webhook", "hooks.example"}, exitUsage, "http(s) URL"},
		{"correlate bad time", []string{"correlate", "--recompute-from", "yesterday"}, exitUsage, "not a time"},
		{"control with country", []string{"targets", "add", "--control", "--country", "KP", "--kind", "icmp", "--addr", "192.0.2.1"}, exitUsage, "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, tt.give...)
			if code != tt.code || !strings.Contains(out+errOut, tt.want) {
				t.Fatalf("exit %d, want %d; output should mention %q:\n%s%s", code, tt.code, tt.want, out, errOut)
			}
		})
	}
}

func TestMigrateCommand(t *testing.T) {
	db := pgtest.EmptyURL(t)
	out := mustCLI(t, "migrate", "--db", db)
	if !strings.Contains(out, "applied 001_init.sql") {
		t.Fatalf("first migrate: %s", out)
	}
	out = mustCLI(t, "migrate", "--db", db)
	if !strings.Contains(out, "nothing to do") {
		t.Fatalf("second migrate: %s", out)
	}
	// DATABASE_URL is the default for --db.
	t.Setenv("DATABASE_URL", db)
	if out := mustCLI(t, "migrate"); !strings.Contains(out, "nothing to do") {
		t.Fatalf("migrate via DATABASE_URL: %s", out)
	}
	// Without either, libpq's PG* variables name the server.
	cfg, err := pgx.ParseConfig(db)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("DATABASE_URL", "")
	t.Setenv("PGHOST", cfg.Host)
	t.Setenv("PGUSER", cfg.User)
	t.Setenv("PGDATABASE", cfg.Database)
	if out := mustCLI(t, "migrate"); !strings.Contains(out, "nothing to do") {
		t.Fatalf("migrate via PG* variables: %s", out)
	}
}

func TestMigrateUnreachableDatabase(t *testing.T) {
	code, _, errOut := cli(t, "migrate", "--db", "host="+t.TempDir()+" dbname=nope connect_timeout=2")
	if code != exitFailure || !strings.Contains(errOut, "connect") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

func TestImportAPNIC(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	out := mustCLI(t, "targets", "import", "--db", db, "--country", "KP", "--name", "North Korea", "--rir", apnicSample)
	if !strings.Contains(out, "KP now has 4 blocks") {
		t.Fatalf("import: %s", out)
	}
	blocks := query[string](t, db, `SELECT string_agg(block::text, ' ' ORDER BY block) FROM blocks WHERE country = 'KP'`)
	if blocks != "175.45.176.0/24 175.45.177.0/24 175.45.178.0/24 175.45.179.0/24" {
		t.Fatalf("KP blocks: %s", blocks)
	}
	if asn := query[int64](t, db, `SELECT asn FROM prefixes WHERE prefix = '175.45.176.0/22'`); asn != 131279 {
		t.Fatalf("KP prefix origin AS %d, want 131279", asn)
	}
	list := mustCLI(t, "targets", "list", "--db", db, "--country", "kp")
	if !strings.Contains(list, "175.45.176.0/22") || !strings.Contains(list, "AS131279") || !strings.Contains(list, "North Korea") {
		t.Fatalf("list: %s", list)
	}
	// Importing the same file again changes nothing.
	out = mustCLI(t, "targets", "import", "--db", db, "--country", "KP", "--rir", apnicSample)
	if !strings.Contains(out, "0 new, 1 kept, 0 removed") {
		t.Fatalf("re-import: %s", out)
	}
}

func TestImportCorruptFileWritesNothing(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	mustCLI(t, "targets", "import", "--db", db, "--country", "KP", "--rir", apnicSample)
	before := query[string](t, db, `SELECT md5(string_agg(prefix::text || source || imported_at::text, ',' ORDER BY prefix)) FROM prefixes`)

	good, err := os.ReadFile(apnicSample)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(good), "\n")
	lines[21] = "apnic|KP|ipv4|175.45.176.0|10x4|20091221|allocated|A9183010" // line 22
	bad := filepath.Join(t.TempDir(), "delegated-apnic-extended-corrupt")
	os.WriteFile(bad, []byte(strings.Join(lines, "\n")), 0o644)

	code, _, errOut := cli(t, "targets", "import", "--db", db, "--country", "KP", "--rir", bad)
	if code != exitUsage || !strings.Contains(errOut, bad+":22:") {
		t.Fatalf("exit %d, want 2 naming %s:22: %s", code, bad, errOut)
	}
	after := query[string](t, db, `SELECT md5(string_agg(prefix::text || source || imported_at::text, ',' ORDER BY prefix)) FROM prefixes`)
	if after != before {
		t.Fatal("a rejected import changed the prefixes table")
	}
}

func TestImportReplacesSource(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	dir := t.TempDir()
	list := filepath.Join(dir, "lab.txt")
	os.WriteFile(list, []byte("# Country: Labland (XL)\n198.19.0.0/23\n198.19.2.0/24\n198.19.3.0/24\n"), 0o644)
	mustCLI(t, "targets", "import", "--db", db, "--country", "XL", "--cidr", list)
	mustCLI(t, "targets", "add", "--db", db, "--country", "XL", "--kind", "tcp", "--addr", "198.19.3.80", "--port", "80")
	mustCLI(t, "targets", "add", "--db", db, "--country", "XL", "--kind", "dns", "--addr", "198.19.0.53", "--zone", "lab")
	if n := query[int64](t, db, `SELECT count(*) FROM blocks WHERE country = 'XL'`); n != 4 {
		t.Fatalf("%d blocks, want 4", n)
	}
	if name := query[string](t, db, `SELECT name FROM countries WHERE code = 'XL'`); name != "Labland" {
		t.Fatalf("country name %q from the list's comment", name)
	}

	// The network 198.19.3.0/24 is gone from the new version of the list:
	// its blocks and targets go with it; the others stay.
	os.WriteFile(list, []byte("198.19.0.0/23\n198.19.2.0/24\n"), 0o644)
	out := mustCLI(t, "targets", "import", "--db", db, "--country", "XL", "--cidr", list)
	if !strings.Contains(out, "0 new, 2 kept, 1 removed") || !strings.Contains(out, "XL now has 3 blocks") {
		t.Fatalf("re-import: %s", out)
	}
	if n := query[int64](t, db, `SELECT count(*) FROM targets WHERE country = 'XL'`); n != 1 {
		t.Fatalf("%d targets left, want the dns one", n)
	}

	// A second source may not claim space the first one holds.
	other := filepath.Join(dir, "other.txt")
	os.WriteFile(other, []byte("198.19.2.0/25\n"), 0o644)
	code, _, errOut := cli(t, "targets", "import", "--db", db, "--country", "XY", "--cidr", other)
	if code != exitUsage || !strings.Contains(errOut, `overlaps 198.19.2.0/24 of XL from source "list:lab.txt"`) {
		t.Fatalf("conflicting import: exit %d: %s", code, errOut)
	}
	if n := query[int64](t, db, `SELECT count(*) FROM countries WHERE code = 'XY'`); n != 0 {
		t.Fatal("a refused import left its country behind")
	}

	// Overlaps within the inputs are refused before the database is touched.
	os.WriteFile(other, []byte("198.20.0.0/16\n198.20.4.0/24\n"), 0o644)
	code, _, errOut = cli(t, "targets", "import", "--db", db, "--country", "XY", "--cidr", other)
	if code != exitUsage || !strings.Contains(errOut, "198.20.4.0/24 overlaps 198.20.0.0/16") {
		t.Fatalf("overlapping inputs: exit %d: %s", code, errOut)
	}
}

func TestImportFromURL(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	body, err := os.ReadFile(apnicSample)
	if err != nil {
		t.Fatal(err)
	}
	// A local HTTP server stands in for ftp.apnic.net: nothing leaves the machine.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/stats/apnic/delegated-apnic-extended-latest" {
			http.NotFound(w, r)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	out := mustCLI(t, "targets", "import", "--db", db, "--country", "KP", "--rir", srv.URL+"/stats/apnic/delegated-apnic-extended-latest")
	if !strings.Contains(out, "KP now has 4 blocks") {
		t.Fatalf("import from URL: %s", out)
	}
	code, _, errOut := cli(t, "targets", "import", "--db", db, "--country", "KP", "--rir", srv.URL+"/missing")
	if code != exitFailure || !strings.Contains(errOut, "404") {
		t.Fatalf("missing URL: exit %d: %s", code, errOut)
	}
}

func TestTargetsAddRemove(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	mustCLI(t, "targets", "import", "--db", db, "--country", "KP", "--cidr", kpList)
	tests := []struct {
		name string
		give []string
		code int
		want string
	}{
		{"web server", []string{"add", "--country", "KP", "--kind", "tcp", "--addr", "175.45.176.71", "--port", "80"}, exitOK, "tcp 175.45.176.71 port 80 in KP"},
		{"dns server", []string{"add", "--country", "KP", "--kind", "dns", "--addr", "175.45.176.15", "--zone", "kp"}, exitOK, "port 53 zone kp."},
		{"control", []string{"add", "--control", "--kind", "icmp", "--addr", "192.0.2.1"}, exitOK, "(control)"},
		{"outside the country", []string{"add", "--country", "KP", "--kind", "tcp", "--addr", "175.45.180.1", "--port", "80"}, exitUsage, "not in KP's imported address space"},
		{"control inside a country", []string{"add", "--control", "--kind", "icmp", "--addr", "175.45.177.1"}, exitUsage, "in KP's address space"},
		{"remove", []string{"remove", "--kind", "tcp", "--addr", "175.45.176.71", "--port", "80"}, exitOK, "removed"},
		{"remove again", []string{"remove", "--kind", "tcp", "--addr", "175.45.176.71", "--port", "80"}, exitUsage, "no tcp target"},
	}
	for _, tt := range tests {
		code, out, errOut := cli(t, append(append([]string{"targets"}, tt.give...), "--db", db)...)
		if code != tt.code || !strings.Contains(out+errOut, tt.want) {
			t.Fatalf("%s: exit %d (want %d), want %q in:\n%s%s", tt.name, code, tt.code, tt.want, out, errOut)
		}
	}
	list := mustCLI(t, "targets", "list", "--db", db)
	if !strings.Contains(list, "1 control targets") || !strings.Contains(list, "icmp 192.0.2.1 (control)") || !strings.Contains(list, "KP  ") {
		t.Fatalf("list: %s", list)
	}
	code, _, errOut := cli(t, "targets", "list", "--db", db, "--country", "IR")
	if code != exitFailure || !strings.Contains(errOut, "IR is not watched") {
		t.Fatalf("list of an unknown country: exit %d: %s", code, errOut)
	}
}

func TestCorrelateCommand(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	if out := mustCLI(t, "correlate", "--db", db); !strings.Contains(out, "nothing new") {
		t.Fatalf("correlate on an empty database: %s", out)
	}
	if out := mustCLI(t, "correlate", "--db", db, "--recompute-from", "2014-12-22"); !strings.Contains(out, "recomputed from 2014-12-22T00:00:00Z") {
		t.Fatalf("recompute: %s", out)
	}
}

func TestReportCommand(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	fixture, err := os.ReadFile("../../store/report/testdata/history.sql")
	if err != nil {
		t.Fatal(err)
	}
	exec := func(sql string) {
		t.Helper()
		conn, err := pgx.Connect(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
	}
	exec(string(fixture))
	period := []string{"--db", db, "--since", "2014-12-21T12:00:00Z", "--until", "2014-12-23T18:00:00Z"}

	out := mustCLI(t, append([]string{"report", "--country", "kp"}, period...)...)
	if !strings.Contains(out, "3 outages") || !strings.Contains(out, "2014-12-22 16:15:04 ±24s") {
		t.Fatalf("text report:\n%s", out)
	}
	if code, _, _ := cli(t, append([]string{"report", "--all", "--fail-on-outage"}, period...)...); code != exitOK {
		t.Fatalf("--fail-on-outage after the outages: exit %d, want 0", code)
	}
	html := filepath.Join(t.TempDir(), "kp.html")
	mustCLI(t, append([]string{"report", "--country", "KP", "--format", "html", "--out", html}, period...)...)
	if b, err := os.ReadFile(html); err != nil || !strings.Contains(string(b), `data-state="down"`) {
		t.Fatalf("html report: %v", err)
	}
	if out := mustCLI(t, "report", "--schema"); !strings.Contains(out, `"$schema"`) {
		t.Fatalf("--schema: %s", out)
	}

	// The outage of the 22nd is still going on.
	exec(`DELETE FROM country_intervals WHERE lower(during) > '2014-12-22 16:15:04Z';
		UPDATE country_intervals SET during = tstzrange(lower(during), NULL) WHERE lower(during) = '2014-12-22 16:15:04Z'`)
	code, out, errOut := cli(t, "report", "--db", db, "--country", "KP", "--since", "2014-12-21", "--format", "json", "--fail-on-outage")
	if code != exitOutage || !strings.Contains(out, `"ongoing": true`) || !strings.Contains(errOut, "outage is ongoing") {
		t.Fatalf("--fail-on-outage during the outage: exit %d, want 3\n%s", code, errOut)
	}

	tests := []struct {
		name string
		give []string
		want string
	}{
		{"unknown country", []string{"--country", "KP,CN"}, "CN is not watched"},
		{"no country", nil, "--country"},
		{"both", []string{"--country", "KP", "--all"}, "--country"},
		{"bad format", []string{"--all", "--format", "pdf"}, "--format"},
		{"bad since", []string{"--all", "--since", "last week"}, "--since"},
		{"inverted", []string{"--all", "--since", "2014-12-23", "--until", "2014-12-22"}, "before --until"},
		{"future since", []string{"--all", "--since", "2099-01-01"}, "--since 2099-01-01T00:00:00Z is in the future"},
		{"future period", []string{"--all", "--since", "2099-01-01", "--until", "2099-02-01"}, "--since 2099-01-01T00:00:00Z is in the future"},
	}
	for _, tt := range tests {
		code, _, errOut := cli(t, append([]string{"report", "--db", db}, tt.give...)...)
		if code != exitUsage || !strings.Contains(errOut, tt.want) {
			t.Errorf("%s: exit %d, want 2 mentioning %q: %s", tt.name, code, tt.want, errOut)
		}
	}
}

// loadReportFixture fills a test database with the report package's
// fixture history: KP and IR, December 2014.
func loadReportFixture(t *testing.T) string {
	t.Helper()
	db := pgtest.URL(t)
	fixture, err := os.ReadFile("../../store/report/testdata/history.sql")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), string(fixture)); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestReportSeveralCountries: --country KP,IR and --all report both
// countries, in text and JSON; --all in code order.
func TestReportSeveralCountries(t *testing.T) {
	t.Parallel()
	db := loadReportFixture(t)
	period := []string{"--db", db, "--since", "2014-12-21T12:00:00Z", "--until", "2014-12-23T18:00:00Z"}
	tests := []struct {
		name string
		give []string
		want []string // countries, in order
	}{
		{"named", []string{"--country", "KP,IR"}, []string{"KP", "IR"}},
		{"named twice", []string{"--country", "kp", "--country", "ir,KP"}, []string{"KP", "IR"}},
		{"all", []string{"--all"}, []string{"IR", "KP"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string{"report"}, tt.give...), period...)
			text := mustCLI(t, args...)
			var at []int
			for _, cc := range tt.want {
				at = append(at, strings.Index(text, "\n"+cc+" "))
			}
			if at[0] < 0 || at[1] <= at[0] || strings.Count(text, "\nKP North Korea:") != 1 {
				t.Errorf("text report: want %v once each, in that order:\n%s", tt.want, text)
			}
			for _, want := range []string{"3 outages, total downtime 10h21m38s", "unknown 3h29m50s)", "2.177.0.0/24 down 2014-12-23 09:00:12"} {
				if !strings.Contains(text, want) {
					t.Errorf("text report lacks %q:\n%s", want, text)
				}
			}
			var r struct {
				Version   int
				Countries []struct {
					Code    string
					Summary struct {
						Outages int
						Unknown int64 `json:"unknown_ns"`
					}
				}
			}
			if err := json.Unmarshal([]byte(mustCLI(t, append(args, "--format", "json")...)), &r); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range r.Countries {
				got = append(got, c.Code)
			}
			if r.Version != 1 || strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("json report: version %d, countries %v; want %v", r.Version, got, tt.want)
			}
			for _, c := range r.Countries {
				if c.Code == "KP" && (c.Summary.Outages != 3 || c.Summary.Unknown != 0) || c.Code == "IR" && (c.Summary.Outages != 0 || c.Summary.Unknown != int64(3*time.Hour+29*time.Minute+50*time.Second)) {
					t.Errorf("json report: %s summary %+v", c.Code, c.Summary)
				}
			}
		})
	}
}

// TestReportUnwatchedCountry: a cron line naming a country cutoff does
// not watch is a usage error that names it, and writes no report.
func TestReportUnwatchedCountry(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	mustCLI(t, "targets", "import", "--db", db, "--country", "KP", "--cidr", kpList)
	out := filepath.Join(t.TempDir(), "r.txt")
	code, stdout, stderr := cli(t, "report", "--db", db, "--country", "KP,IR", "--out", out)
	if code != exitUsage || !strings.Contains(stderr, "IR is not watched") || strings.Contains(stderr, "KP is not") || stdout != "" {
		t.Fatalf("exit %d, want 2 naming IR alone\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("a failed report left %s: %v", out, err)
	}
	code, _, stderr = cli(t, "report", "--db", db, "--country", "IR,KP,CN")
	if code != exitUsage || !strings.Contains(stderr, "IR, CN are not watched") {
		t.Fatalf("exit %d, want 2 naming IR and CN: %s", code, stderr)
	}
}

// TestReportOutUnwritable: a report that cannot be written fails (exit 1)
// naming the file and why, and leaves no partial or temporary file.
func TestReportOutUnwritable(t *testing.T) {
	t.Parallel()
	db := loadReportFixture(t)
	dir := t.TempDir()
	taken := filepath.Join(dir, "taken")
	if err := os.Mkdir(taken, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		give string
		want string
	}{
		{"no such directory", filepath.Join(dir, "missing", "r.html"), "no such file or directory"},
		{"a directory", taken, "is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, "report", "--db", db, "--country", "KP", "--format", "html", "--since", "2014-12-21", "--until", "2014-12-24", "--out", tt.give)
			if code != exitFailure || !strings.Contains(stderr, "write "+tt.give+": "+tt.want) || stdout != "" {
				t.Fatalf("exit %d, want 1 with %q\nstdout: %s\nstderr: %s", code, "write "+tt.give+": "+tt.want, stdout, stderr)
			}
			left, _ := os.ReadDir(dir)
			if len(left) != 1 || left[0].Name() != "taken" {
				t.Fatalf("left behind in %s: %v", dir, left)
			}
			if inside, _ := os.ReadDir(taken); len(inside) != 0 {
				t.Fatalf("wrote into %s: %v", taken, inside)
			}
		})
	}
}

func TestVantageList(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	if out := mustCLI(t, "vantage", "list", "--db", db); !strings.Contains(out, "no vantages") {
		t.Fatalf("empty: %s", out)
	}
	conn, err := pgx.Connect(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, sql := range []string{
		`SELECT cutoff_vantage_heartbeat('vp1', 660, 5, 2500, 4096, 12, now() - interval '5 minutes', 100, '{KP}', 'v1', 'tokyo')`,
		`INSERT INTO probe_results (vantage, kind, addr, sent_at, outcome) VALUES ('vp1', 'icmp', '175.45.176.1', now(), 'timeout'), ('vp1', 'icmp', '175.45.176.2', now() - interval '2 hours', 'timeout')`,
		`INSERT INTO vantage_health (vantage, during, state, reason) VALUES ('vp1', tstzrange(now() - interval '1 hour', NULL), 'unhealthy', 'control targets unanswered')`,
	} {
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
	}
	out := mustCLI(t, "vantage", "list", "--db", db)
	for _, want := range []string{"vp1", "12 (4.0 KiB), oldest 5m", "+2500ms (!)", "unhealthy: control targets unanswered", "11m0s", "KP"} {
		if !strings.Contains(out, want) {
			t.Fatalf("vantage list lacks %q:\n%s", want, out)
		}
	}
	if fields := strings.Fields(strings.Split(out, "\n")[1]); fields[3] != "1" {
		t.Fatalf("results in the last hour: %q, want 1\n%s", fields[3], out)
	}

	// --json, for machines: snake_case names, durations in ns.
	var vs []map[string]any
	if err := json.Unmarshal([]byte(mustCLI(t, "vantage", "list", "--db", db, "--json")), &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) != 1 {
		t.Fatalf("--json: %d vantages, want 1: %v", len(vs), vs)
	}
	v := vs[0]
	for k, want := range map[string]any{
		"name": "vp1", "results_last_hour": 1.0, "spool_records": 12.0, "spool_bytes": 4096.0, "clock_offset_ns": 2.5e9,
		"round_ns": 660e9, "timeout_ns": 5e9, "probes_sent": 100.0, "version": "v1", "hostname": "tokyo",
		"health": "unhealthy", "health_reason": "control targets unanswered",
	} {
		if v[k] != want {
			t.Errorf("--json %s = %v, want %v", k, v[k], want)
		}
	}
	if cs, _ := v["countries"].([]any); len(cs) != 1 || cs[0] != "KP" {
		t.Errorf("--json countries = %v, want [KP]", v["countries"])
	}
	for _, k := range []string{"first_seen", "last_seen", "spool_oldest", "health_since"} {
		if s, _ := v[k].(string); s == "" {
			t.Errorf("--json %s = %v, want a time", k, v[k])
		} else if _, err := time.Parse(time.RFC3339, s); err != nil {
			t.Errorf("--json %s: %v", k, err)
		}
	}
}

func TestVantageListJSONEmpty(t *testing.T) {
	t.Parallel()
	db := pgtest.URL(t)
	if out := strings.TrimSpace(mustCLI(t, "vantage", "list", "--db", db, "--json")); out != "[]" {
		t.Fatalf("--json with no vantages: %q, want []", out)
	}
}
