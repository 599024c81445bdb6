package lab_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/labtest"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func eventStrings(sc *lab.Scenario) []string {
	var out []string
	for _, e := range sc.Events {
		out = append(out, e.String())
	}
	return out
}

func TestParseScenario(t *testing.T) {
	tests := []struct {
		name      string
		give      string
		want      []string // events, when valid
		wantScale float64
		wantErr   []string // substrings of the error, when invalid
	}{
		{
			name:      "the issue's example",
			give:      "# December 2014 replay (example)\nstart 2014-12-21T12:00:00Z     # story clock\nscale 1h=4s\n+0s      up\n+90s     cut border\n+180s    restore border\n+200s    loss net1 20%\n+260s    restore net1\n+300s    decay net2 over 60s\n",
			want:      []string{"+0s up", "+1m30s cut border", "+3m0s restore border", "+3m20s loss net1 20%", "+4m20s restore net1", "+5m0s decay net2 over 1m0s"},
			wantScale: 900,
		},
		{
			name:      "story times, days, flap, end",
			give:      "start 2014-12-21T12:00:00Z\n+0s up\n@2014-12-22T16:15:00Z cut border\n+1d13h46m restore all\n+1d14h flap 198.19.1.0/24 every 10m for 20m\n+2d end\n",
			want:      []string{"+0s up", "+1d4h15m0s cut border", "+1d13h46m0s restore all", "+1d14h0m0s cut 198.19.1.0/24 (flap)", "+1d14h5m0s restore 198.19.1.0/24 (flap)", "+1d14h10m0s cut 198.19.1.0/24 (flap)", "+1d14h15m0s restore 198.19.1.0/24 (flap)", "+2d end"},
			wantScale: 1,
		},
		{
			name:      "flap steps interleave with later lines",
			give:      "scale 60\n+0s flap net0 every 2m for 4m\n+1m30s cut vp1\n",
			want:      []string{"+0s cut net0 (flap)", "+1m0s restore net0 (flap)", "+1m30s cut vp1", "+2m0s cut net0 (flap)", "+3m0s restore net0 (flap)"},
			wantScale: 60,
		},
		{
			name:      "delay and zero loss",
			give:      "+0s delay vp2 50ms\n+1s loss border 0%\n",
			want:      []string{"+0s delay vp2 50ms", "+1s loss border 0%"},
			wantScale: 1,
		},
		{name: "no events", give: "# nothing\nscale 2\n", wantErr: []string{"f.scn: no events"}},
		{name: "unknown line", give: "+0s up\nexplode\n", wantErr: []string{"f.scn:2: unknown line"}},
		{name: "unknown event", give: "+0s up\n+1s explode border\n", wantErr: []string{"f.scn:2: unknown event"}},
		{name: "out of order", give: "+10s up\n+5s cut border\n", wantErr: []string{"f.scn:2: +5s is before"}},
		{name: "bad offset", give: "+5x up\n", wantErr: []string{"f.scn:1: duration"}},
		{name: "story time without start", give: "@2014-12-22T16:15:00Z up\n", wantErr: []string{"f.scn:1: @2014-12-22T16:15:00Z: an @TIME event needs a start"}},
		{name: "story time before start", give: "start 2014-12-22T00:00:00Z\n@2014-12-21T16:15:00Z up\n", wantErr: []string{"f.scn:2:", "before the start"}},
		{name: "directive after events", give: "+0s up\nscale 2\n", wantErr: []string{"f.scn:2: scale must come before"}},
		{name: "bad scale", give: "scale 1h=0s\n+0s up\n", wantErr: []string{"f.scn:1: scale"}},
		{name: "bad start", give: "start yesterday\n+0s up\n", wantErr: []string{"f.scn:1: start"}},
		{name: "loss without percent sign", give: "+0s loss net1 20\n", wantErr: []string{"f.scn:1: loss \"20\""}},
		{name: "loss over 100", give: "+0s loss net1 120%\n", wantErr: []string{"f.scn:1: loss"}},
		{name: "cut all", give: "+0s cut all\n", wantErr: []string{"f.scn:1: cut all"}},
		{name: "missing target", give: "+0s cut\n", wantErr: []string{"f.scn:1: want 'cut TARGET'"}},
		{name: "decay without over", give: "+0s decay net2 60s\n", wantErr: []string{"f.scn:1: want 'decay TARGET over DURATION'"}},
		{name: "flap too short", give: "+0s flap net1 every 1h for 10m\n", wantErr: []string{"f.scn:1: flap every 1h for 10m"}},
		{name: "flap too many", give: "+0s flap net1 every 1s for 1000d\n", wantErr: []string{"f.scn:1:", "at most"}},
		{name: "bad target", give: "+0s cut Net_1\n", wantErr: []string{"f.scn:1: bad target"}},
		{
			name:    "every bad line is reported",
			give:    "+0s up\n+1s cut\nbogus\n+2s loss x 5\n",
			wantErr: []string{"f.scn:2:", "f.scn:3:", "f.scn:4:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, err := lab.ParseScenario("f.scn", strings.NewReader(tt.give))
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("parsed %v, want an error", eventStrings(sc))
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := eventStrings(sc); !slices.Equal(got, tt.want) {
				t.Errorf("events\n got %q\nwant %q", got, tt.want)
			}
			if sc.Scale != tt.wantScale || sc.Name != "f" {
				t.Errorf("scale %v name %q, want %v and f", sc.Scale, sc.Name, tt.wantScale)
			}
		})
	}
}

func TestScenarioCheck(t *testing.T) {
	sc, err := lab.ParseScenario("f.scn", strings.NewReader("+0s up\n+1s cut narnia\n+2s decay border over 1m\n+3s restore all\n+4s cut 198.19.2.0/24\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = sc.Check(lab.Default())
	if err == nil || !strings.Contains(err.Error(), `f.scn:2: unknown lab target "narnia"`) ||
		!strings.Contains(err.Error(), "f.scn:3: decay border: only a network") || strings.Contains(err.Error(), "f.scn:5") {
		t.Errorf("Check = %v", err)
	}
}

// FuzzParseScenario: the parser never panics, valid scenarios come out in
// time order, and every error names the file.
func FuzzParseScenario(f *testing.F) {
	f.Add("start 2014-12-21T12:00:00Z\nscale 1h=4s\n+0s up\n+90s cut border\n@2014-12-22T16:15:00Z restore all\n")
	f.Add("+0s flap net1 every 10m for 2h\n+1d decay net2 over 60s\n+1d1h loss vp1 20%\n+1d2h end\n")
	f.Add("+5s up\n+1s cut\nbogus # x\n")
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := lab.ParseScenario("fz.scn", strings.NewReader(s))
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fz.scn") {
					t.Fatalf("error line %q does not name the file", line)
				}
			}
			return
		}
		if sc.Scale <= 0 || len(sc.Events) == 0 {
			t.Fatalf("scale %v with %d events", sc.Scale, len(sc.Events))
		}
		for i := 1; i < len(sc.Events); i++ {
			if sc.Events[i].At < sc.Events[i-1].At {
				t.Fatalf("events out of order: %v", eventStrings(sc))
			}
		}
	})
}

func TestParseScale(t *testing.T) {
	tests := []struct {
		give string
		want float64
	}{
		{"1h=4s", 900}, {"1h=1h", 1}, {"90s=1s", 90}, {"1d=1m", 1440}, {"900", 900}, {"2.5x", 2.5},
		{"0", 0}, {"1h=0s", 0}, {"=4s", 0}, {"fast", 0},
	}
	for _, tt := range tests {
		got, err := lab.ParseScale(tt.give)
		if tt.want == 0 && err == nil || tt.want != 0 && (err != nil || got != tt.want) {
			t.Errorf("ParseScale(%q) = %v, %v; want %v", tt.give, got, err, tt.want)
		}
	}
}

// truthRecorder is the test's own adapter from lab.Truth to lab_truth
// (cutoff lab run has the same in cmd/cutoff).
type truthRecorder struct{ st *store.Store }

func (r truthRecorder) Record(ctx context.Context, t lab.Truth) error {
	return r.st.RecordLabTruth(ctx, store.LabTruth{RunID: t.RunID, Seq: t.Seq, Scenario: t.Scenario,
		Country: t.Country, Target: t.Target, Fault: t.Fault, Detail: t.Detail, Prefixes: t.Prefixes,
		Line: t.Line, StartedAt: t.StartedAt, EndedAt: t.EndedAt, DoneAt: t.DoneAt,
		StoryStart: t.StoryStart, StoryEnd: t.StoryEnd})
}

// TestRun plays a compressed scenario on a real lab and checks the ground
// truth in lab_truth and the JSON file: one row per fault, at the times
// the scenario says (within scheduling slack), story times consistent
// with the scale, and everything restored at the end.
func TestRun(t *testing.T) {
	l := labtest.Up(t, lab.Default())
	st := pgtest.New(t)
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "short.scn")
	// 1h of story = 10s: a minute of story is 1/6 s.
	const text = `# a short replay
start 2014-12-22T16:00:00Z
scale 1h=10s
+0s up
+6m cut border            # 1 s
+12m restore border       # 2 s
+12m loss net1 20%
+15m decay net2 over 6m   # 2.5 s, done at 3.5 s
+18m cut vp1              # 3 s
+18m flap net0 every 4m for 8m
`
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	sc, err := lab.LoadScenario(file)
	if err != nil {
		t.Fatal(err)
	}
	truthFile := filepath.Join(dir, "truth.json")
	var cutSeen []bool
	res, err := lab.Run(ctx, l, sc, lab.RunOptions{Recorder: truthRecorder{st}, TruthFile: truthFile,
		OnEvent: func(e lab.Event, _ time.Time, _ *time.Time) {
			if e.Op == "restore" && e.Target == "border" {
				// Just before the restore, the border is still cut.
				s, err := l.Status(ctx)
				cutSeen = append(cutSeen, err == nil && slices.Contains(s.Faults(), "cut border"))
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cutSeen, []bool{true}) {
		t.Errorf("border cut during the run: %v, want [true]", cutSeen)
	}
	type want struct {
		fault, target string
		start, end    time.Duration // wall, since the run started
	}
	runEnd := 4 * time.Second // the last flap restore at +24m
	wants := []want{
		{"cut", "border", time.Second, 2 * time.Second},
		{"loss", "net:198.19.1.0/24", 2 * time.Second, runEnd},
		{"decay", "net:198.19.2.0/24", 2500 * time.Millisecond, runEnd},
		{"cut", "vantage:vp1", 3 * time.Second, runEnd},
		{"flap", "net:198.19.0.0/24", 3 * time.Second, 3*time.Second + time.Second/3},
		{"flap", "net:198.19.0.0/24", 3*time.Second + 2*time.Second/3, runEnd},
	}
	const slack = 400 * time.Millisecond
	rows, err := st.LabTruthOf(ctx, res.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(wants) || len(res.Faults) != len(wants) {
		t.Fatalf("got %d rows and %d faults, want %d: %+v", len(rows), len(res.Faults), len(wants), res.Faults)
	}
	near := func(got time.Time, want time.Duration) bool {
		d := got.Sub(res.StartedAt) - want
		return d > -slack && d < slack
	}
	for i, w := range wants {
		r := rows[i]
		if r.Fault != w.fault || r.Target != w.target || r.Scenario != "short" || r.Country != "XL" {
			t.Errorf("row %d = %s %s (%s, %s), want %s %s", i, r.Fault, r.Target, r.Scenario, r.Country, w.fault, w.target)
			continue
		}
		if r.EndedAt == nil || !near(r.StartedAt, w.start) || !near(*r.EndedAt, w.end) {
			t.Errorf("row %d %s %s: %v–%v after the start, want %v–%v", i, r.Fault, r.Target,
				r.StartedAt.Sub(res.StartedAt), r.EndedAt, w.start, w.end)
			continue
		}
		// The story clock runs 360 times as fast from 16:00.
		wantStory := sc.Start.Add(r.StartedAt.Sub(res.StartedAt) * 360)
		if r.StoryStart == nil || r.StoryStart.Sub(wantStory).Abs() > time.Second || r.StoryEnd == nil {
			t.Errorf("row %d: story start %v, want %v", i, r.StoryStart, wantStory)
		}
		if f := res.Faults[i]; f.Seq != r.Seq || f.Target != r.Target || !f.StartedAt.Equal(r.StartedAt) {
			t.Errorf("fault %d in the result %+v differs from its row %+v", i, f, r)
		}
	}
	if d := rows[2]; d.DoneAt == nil || !near(*d.DoneAt, 3500*time.Millisecond) {
		t.Errorf("decay done at %v, want 3.5 s after the start", d.DoneAt)
	}
	if got := rows[0].Prefixes; len(got) != 4 {
		t.Errorf("border cut affects %v, want the 4 networks", got)
	}
	// The JSON file holds the same.
	b, err := os.ReadFile(truthFile)
	if err != nil {
		t.Fatal(err)
	}
	var js lab.RunResult
	if err := json.Unmarshal(b, &js); err != nil {
		t.Fatal(err)
	}
	if js.RunID != res.RunID || len(js.Faults) != len(wants) || js.EndedAt == nil || js.Scale != 360 {
		t.Errorf("truth file: run %s, %d faults, ended %v, scale %v", js.RunID, len(js.Faults), js.EndedAt, js.Scale)
	}
	for i, f := range js.Faults {
		if f.EndedAt == nil || f.Target != wants[i].target {
			t.Errorf("truth file fault %d = %+v", i, f)
		}
	}
	// Everything was restored at the end.
	s, err := l.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if f := s.Faults(); len(f) != 0 {
		t.Errorf("faults after the run: %v", f)
	}
}

// TestRunCancel: a cancelled run still restores and closes its truth.
func TestRunCancel(t *testing.T) {
	l := labtest.Up(t, lab.Default())
	sc, err := lab.ParseScenario("c.scn", strings.NewReader("+0s cut border\n+0s decay net1 over 1h\n+1h end\n"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res, err := lab.Run(ctx, l, sc, lab.RunOptions{})
	if err == nil {
		t.Fatal("cancelled run returned no error")
	}
	if len(res.Faults) != 2 || res.Faults[0].EndedAt == nil || res.Faults[1].EndedAt == nil {
		t.Errorf("faults after cancel: %+v, want both closed", res.Faults)
	}
	s, err := l.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f := s.Faults(); len(f) != 0 {
		t.Errorf("faults after a cancelled run: %v", f)
	}
}

// TestRunWithoutLab: Run refuses, rather than crashes, when it has neither
// a lab nor a way to bring one up. No namespaces are needed.
func TestRunWithoutLab(t *testing.T) {
	for _, give := range []string{"+0s up\n+1s end\n", "+0s cut border\n+1s end\n"} {
		sc, err := lab.ParseScenario("n.scn", strings.NewReader(give))
		if err != nil {
			t.Fatal(err)
		}
		res, err := lab.Run(context.Background(), nil, sc, lab.RunOptions{})
		if err == nil || res != nil || !strings.Contains(err.Error(), "n.scn") {
			t.Errorf("%q: result %v, err %v, want an error naming the file", give, res, err)
		}
	}
}
