package report_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
	"github.com/cutoffnet/cutoff/store/report"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestMain(m *testing.M) { pgtest.Main(m) }

var (
	since = time.Date(2014, 12, 21, 12, 0, 0, 0, time.UTC)
	until = time.Date(2014, 12, 23, 18, 0, 0, 0, time.UTC)
)

func fixture(t *testing.T) *store.Store {
	t.Helper()
	st := pgtest.New(t)
	sql, err := os.ReadFile("testdata/history.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Pool().Exec(context.Background(), string(sql)); err != nil {
		t.Fatalf("load fixture: %v", err)
	}
	return st
}

func build(t *testing.T, st *store.Store, opt report.Options) *report.Report {
	t.Helper()
	r, err := report.Build(context.Background(), st.Pool(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func render(t *testing.T, r *report.Report, format string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := report.Write(&b, r, format); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// golden compares got with testdata/name, which was reviewed by eye once;
// go test -update rewrites it.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the golden file; got:\n%s", name, got)
	}
}

func TestGoldenFormats(t *testing.T) {
	t.Parallel()
	st := fixture(t)
	tests := []struct {
		name string
		give []string
	}{
		{"december-2014", []string{"KP"}},
		// IR adds an unknown stretch and an outage of one network.
		{"two-countries", []string{"KP", "IR"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := build(t, st, report.Options{Countries: tt.give, Since: since, Until: until, Now: until})
			for _, f := range report.Formats {
				golden(t, tt.name+"."+f, render(t, r, f))
			}
		})
	}
}

// TestSeveralCountries: --all reports every watched country, in code
// order, each exactly as when asked for by name.
func TestSeveralCountries(t *testing.T) {
	t.Parallel()
	st := fixture(t)
	named := build(t, st, report.Options{Countries: []string{"KP", "IR"}, Since: since, Until: until, Now: until})
	all := build(t, st, report.Options{All: true, Since: since, Until: until, Now: until})
	if len(named.Countries) != 2 || named.Countries[0].Code != "KP" || named.Countries[1].Code != "IR" {
		t.Fatalf("--country KP,IR reported %+v, want KP then IR", named.Countries)
	}
	if len(all.Countries) != 2 || all.Countries[0].Code != "IR" || all.Countries[1].Code != "KP" {
		t.Fatalf("--all reported %+v, want IR and KP", all.Countries)
	}
	for i, j := range []int{1, 0} {
		a, _ := json.Marshal(all.Countries[i])
		b, _ := json.Marshal(named.Countries[j])
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between --all and --country:\n%s\n%s", all.Countries[i].Code, a, b)
		}
	}
	ir := named.Countries[1]
	if want := 3*time.Hour + 29*time.Minute + 50*time.Second; ir.Summary.Unknown != want || ir.Summary.Measured != until.Sub(since)-want {
		t.Errorf("IR unknown %v, measured %v; want %v unknown, the rest measured", ir.Summary.Unknown, ir.Summary.Measured, want)
	}
	if ir.Summary.Outages != 0 || ir.Networks[1].Summary.Outages != 1 || ir.Networks[1].Outages[0].Duration != time.Hour+30*time.Minute+28*time.Second {
		t.Errorf("IR: %d country outages, %s's outages %+v; want none, and one of 1h30m28s", ir.Summary.Outages, ir.Networks[1].Prefix, ir.Networks[1].Outages)
	}
}

// TestUnknownInEveryFormat: a stretch nobody could judge is shown as such
// in every format, not passed over as if it were up.
func TestUnknownInEveryFormat(t *testing.T) {
	t.Parallel()
	st := fixture(t)
	r := build(t, st, report.Options{Countries: []string{"IR"}, Since: since, Until: until, Now: until})
	tests := []struct {
		format string
		want   []string
	}{
		{"text", []string{"unknown 3h29m50s)", "State unknown (too few blocks measurable to judge)\n    2014-12-22 02:00:20 to 2014-12-22 05:30:10 (3h29m50s)",
			"availability 100.00%, unknown 3h29m50s", "2.177.0.0/24 down 2014-12-23 09:00:12 ±22s to 2014-12-23 10:30:40 ±20s (1h30m28s)"}},
		{"markdown", []string{"unknown 3h29m50s)", "- 2014-12-22 02:00:20 to 2014-12-22 05:30:10 (3h29m50s)", "| 2.176.0.0/24 | AS58224 | 100.00%, unknown 3h29m50s |"}},
		{"csv", []string{"country,IR,IR,unknown,2014-12-22T02:00:20Z,2014-12-22T05:30:10Z,false,12590", "network,2.177.0.0/24,IR,unknown,"}},
		{"json", []string{`"unknown_ns": 12590000000000`, `"state": "unknown"`}},
		{"html", []string{`data-state="unknown" x="`, `fill="#bdbdbd"><title>IR Iran: unknown 2014-12-22 02:00:20 to 2014-12-22 05:30:10 (3h29m50s)`,
			"<li>2014-12-22 02:00:20 to 2014-12-22 05:30:10 (3h29m50s)</li>",
			"<td>2.177.0.0/24</td><td>2014-12-23 09:00:12 ±22s</td><td>2014-12-23 10:30:40 ±20s</td><td>1h30m28s</td>"}},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			out := string(render(t, r, tt.format))
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("%s report lacks %q:\n%s", tt.format, w, out)
				}
			}
		})
	}
}

func TestSummary(t *testing.T) {
	t.Parallel()
	st := fixture(t)
	r := build(t, st, report.Options{Countries: []string{"KP"}, Since: since, Until: until, Now: until})
	c := r.Countries[0]
	if c.Summary.Outages != 3 {
		t.Fatalf("%d outages, want 3", c.Summary.Outages)
	}
	want := 9*time.Hour + 30*time.Minute + 58*time.Second
	if c.Summary.Longest != want {
		t.Fatalf("longest %v, want %v", c.Summary.Longest, want)
	}
	if c.Outages[0].Scope != "country" || len(c.Outages[0].Networks) != 4 || c.Outages[0].Vantages != 2 {
		t.Fatalf("first outage %+v", c.Outages[0])
	}
	if u := c.Outages[0].Start.Uncertainty(); u != 24*time.Second {
		t.Fatalf("start uncertainty %v, want 24s", u)
	}
	// The flapping network has outages of its own; the country does not.
	var flaps int
	for _, n := range c.Networks {
		if n.Prefix == "175.45.177.0/24" {
			flaps = n.Summary.Outages
		}
	}
	if flaps != 5 {
		t.Fatalf("flapping network: %d outages, want 5 (2 flaps and the 3 cut-offs)", flaps)
	}
	if c.Summary.Availability <= 0.7 || c.Summary.Availability >= 0.85 {
		t.Fatalf("availability %v", c.Summary.Availability)
	}
	if len(r.Vantages) != 2 || len(r.Vantages[1].Periods) != 1 || r.Vantages[1].Unhealthy != time.Hour+30*time.Second {
		t.Fatalf("vantage health %+v", r.Vantages)
	}
}

func TestJSONMatchesSchema(t *testing.T) {
	t.Parallel()
	st := fixture(t)
	c := jsonschema.NewCompiler()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(report.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	c.AssertFormat()
	schema, err := c.Compile("schema.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		give report.Options
	}{
		{"whole period", report.Options{Countries: []string{"KP"}, Since: since, Until: until, Now: until}},
		{"during the outage", report.Options{All: true, Since: since, Now: time.Date(2014, 12, 22, 20, 0, 0, 0, time.UTC)}},
		{"empty period", report.Options{All: true, Since: time.Date(2014, 11, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(2014, 11, 2, 0, 0, 0, 0, time.UTC), Now: until}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := render(t, build(t, st, tt.give), "json")
			v, err := jsonschema.UnmarshalJSON(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			if err := schema.Validate(v); err != nil {
				t.Fatalf("report does not match its schema: %v\n%s", err, out)
			}
			var back report.Report
			dec := json.NewDecoder(bytes.NewReader(out))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&back); err != nil || back.Version != report.SchemaVersion {
				t.Fatalf("decode: %v, version %d", err, back.Version)
			}
		})
	}
	// The schema is not a rubber stamp.
	bad, _ := jsonschema.UnmarshalJSON(strings.NewReader(`{"version": 2}`))
	if schema.Validate(bad) == nil {
		t.Fatal("schema accepted a wrong document")
	}
}

func TestOngoingOutage(t *testing.T) {
	t.Parallel()
	st := fixture(t)
	// Cut the history at the moment of the report: the down interval of
	// the 22nd is the current state.
	now := time.Date(2014, 12, 22, 20, 0, 0, 0, time.UTC)
	for _, sql := range []string{
		`DELETE FROM country_intervals WHERE lower(during) > '2014-12-22 20:00Z'`,
		`UPDATE country_intervals SET during = tstzrange(lower(during), NULL), end_earliest = NULL, end_latest = NULL WHERE state = 'down' AND lower(during) = '2014-12-22 16:15:04Z'`,
		`DELETE FROM network_intervals WHERE lower(during) > '2014-12-22 20:00Z'`,
		`UPDATE network_intervals SET during = tstzrange(lower(during), NULL) WHERE state = 'down' AND lower(during) = '2014-12-22 16:15:04Z'`,
	} {
		if _, err := st.Pool().Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
	}
	r := build(t, st, report.Options{Countries: []string{"KP"}, Since: since, Now: now})
	if !r.Ongoing() || !r.Countries[0].Summary.Ongoing {
		t.Fatal("ongoing outage not reported")
	}
	o := r.Countries[0].Outages[len(r.Countries[0].Outages)-1]
	if !o.Ongoing || o.End != nil || o.Duration != now.Sub(time.Date(2014, 12, 22, 16, 15, 4, 0, time.UTC)) {
		t.Fatalf("ongoing outage %+v", o)
	}
	if text := string(render(t, r, "text")); !strings.Contains(text, "ONE ONGOING") || !strings.Contains(text, "ongoing") {
		t.Fatalf("text report does not say it is ongoing:\n%s", text)
	}
}

func TestEmptyPeriodAndUnknownCountry(t *testing.T) {
	t.Parallel()
	st := fixture(t)
	r := build(t, st, report.Options{Countries: []string{"KP"}, Since: time.Date(2014, 11, 1, 0, 0, 0, 0, time.UTC),
		Until: time.Date(2014, 11, 2, 0, 0, 0, 0, time.UTC), Now: until})
	if text := string(render(t, r, "text")); !strings.Contains(text, "no measurements in this period") {
		t.Fatalf("empty period:\n%s", text)
	}
	_, err := report.Build(context.Background(), st.Pool(), report.Options{Countries: []string{"KP", "CN"}, Since: since, Now: until})
	if !errors.Is(err, report.ErrNoData) || !strings.Contains(err.Error(), "CN is not watched") {
		t.Fatalf("unknown country: %v", err)
	}
	_, err = report.Build(context.Background(), st.Pool(), report.Options{Countries: []string{"CN", "KP", "XX"}, Since: since, Now: until})
	if !errors.Is(err, report.ErrNoData) || !strings.Contains(err.Error(), "CN, XX are not watched") {
		t.Fatalf("two unknown countries: %v", err)
	}
	_, err = report.Build(context.Background(), st.Pool(), report.Options{Countries: []string{"KP"}, Since: until, Until: since, Now: until})
	if err == nil || !strings.Contains(err.Error(), "period is empty") {
		t.Fatalf("inverted period: %v", err)
	}
	// A database that has never been correlated still reports.
	empty := pgtest.New(t)
	if _, err := empty.Pool().Exec(context.Background(), `INSERT INTO countries (code) VALUES ('KP')`); err != nil {
		t.Fatal(err)
	}
	r = build(t, empty, report.Options{All: true, Since: since, Now: until})
	if text := string(render(t, r, "text")); !strings.Contains(text, "no data correlated yet") {
		t.Fatalf("uncorrelated database:\n%s", text)
	}
}

func TestParsePeriod(t *testing.T) {
	now := time.Date(2014, 12, 23, 18, 0, 0, 0, time.UTC)
	tests := []struct {
		give string
		want time.Time
		ok   bool
	}{
		{"24h", now.Add(-24 * time.Hour), true},
		{"7d", now.Add(-7 * 24 * time.Hour), true},
		{"90m", now.Add(-90 * time.Minute), true},
		{"2014-12-22", time.Date(2014, 12, 22, 0, 0, 0, 0, time.UTC), true},
		{"2014-12-22T16:15:00Z", time.Date(2014, 12, 22, 16, 15, 0, 0, time.UTC), true},
		{"2014-12-22 16:15", time.Date(2014, 12, 22, 16, 15, 0, 0, time.UTC), true},
		{"yesterday", time.Time{}, false},
		{"-5h", time.Time{}, false},
		{"0d", time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, err := report.ParsePeriod(tt.give, now)
			if tt.ok != (err == nil) || !got.Equal(tt.want) {
				t.Fatalf("ParsePeriod(%q) = %v, %v", tt.give, got, err)
			}
		})
	}
}

func TestWarp(t *testing.T) {
	t.Parallel()
	st := fixture(t)
	r := build(t, st, report.Options{Countries: []string{"KP"}, Since: since, Until: until, Now: until})
	// Replay the fixture one hundred times slower, starting in 2030.
	origin := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	r.Warp(func(x time.Time) time.Time { return origin.Add(x.Sub(since) * 100) }, 100)
	o := r.Countries[0].Outages[0]
	if want := origin.Add(time.Date(2014, 12, 22, 16, 15, 4, 0, time.UTC).Sub(since) * 100); !o.Start.At.Equal(want) {
		t.Fatalf("warped start %v, want %v", o.Start.At, want)
	}
	if want := (9*time.Hour + 30*time.Minute + 58*time.Second) * 100; o.Duration != want || r.Countries[0].Summary.Longest != want {
		t.Fatalf("warped duration %v, want %v", o.Duration, want)
	}
	if !r.Since.Equal(origin) || r.Countries[0].Summary.Availability < 0.7 {
		t.Fatalf("warped report %v, availability %v", r.Since, r.Countries[0].Summary.Availability)
	}
}

// TestREADMEQueries runs the README's SQL examples, as a cutoff_reader,
// against the fixture history, so the documentation stays true.
func TestREADMEQueries(t *testing.T) {
	t.Parallel()
	st := fixture(t)
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i := strings.Index(s, "<!-- sql-examples -->")
	if i < 0 {
		t.Fatal("README has no <!-- sql-examples --> block")
	}
	s = s[i:]
	s = s[strings.Index(s, "```sql")+len("```sql"):]
	s = s[:strings.Index(s, "```")]
	ctx := context.Background()
	conn, err := st.Pool().Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET ROLE cutoff_reader"); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "RESET ROLE")
	n := 0
	for _, q := range strings.Split(s, ";\n") {
		if strings.TrimSpace(q) == "" {
			continue
		}
		n++
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatalf("README query fails: %v\n%s", err, q)
		}
		count := 0
		for rows.Next() {
			count++
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("README query fails: %v\n%s", err, q)
		}
		if strings.Contains(q, "country_outages") && !strings.Contains(q, "observations") && count == 0 {
			t.Errorf("README query returns nothing on the fixture's three outages:\n%s", q)
		}
	}
	if n < 5 {
		t.Fatalf("%d README queries found, want the examples", n)
	}
}
