package correlate

import (
	"fmt"
	"strings"
	"testing"
)

const sec = int64(1_000_000)

// obs builds verdicts from a compact script: "u@100" is an up verdict
// reached at 100 s, "d@160" a down verdict reached at 160 s whose visit
// started 2 s before.
func obs(script string) []Obs {
	var out []Obs
	for _, f := range strings.Fields(script) {
		var c byte
		var at int64
		fmt.Sscanf(f, "%c@%d", &c, &at)
		o := Obs{At: at * sec, Sent: at*sec - 2*sec, State: Up}
		if c == 'd' {
			o.State = Down
		}
		out = append(out, o)
	}
	return out
}

// show renders a track as "state@T[E,L]" in seconds.
func show(tr track) string {
	var parts []string
	for _, p := range tr {
		s := fmt.Sprintf("%s@%d", p.State, p.T/sec)
		if p.Informative {
			s += fmt.Sprintf("[%d,%d]", p.E/sec, p.L/sec)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func TestVantageTrack(t *testing.T) {
	tests := []struct {
		name string
		give string
		want string
	}{
		{"steady up goes stale after the last verdict", "u@0 u@60 u@120", "up@0 unknown@220"},
		{"outage bracketed by last up and first failed probe", "u@0 u@60 d@120 d@180 u@240",
			// down: last up at 60, first failed probe at 118; up again:
			// last failed probe no later than 180-1 (timeout 1 s), first reply at 240.
			"up@0 down@89[60,118] up@209[179,240] unknown@340"},
		{"a gap longer than freshness is unknown", "u@0 u@300", "up@0 unknown@100 up@300 unknown@400"},
		{"flapping", "u@0 d@10 u@20 d@30", "up@0 down@4[0,8] up@14[9,20] down@24[20,28] unknown@130"},
		{"nothing but uncertainty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := show(vantageTrack(obs(tt.give), 100*sec, 1*sec, nil))
			if got != tt.want {
				t.Fatalf("vantageTrack(%q)\n got %s\nwant %s", tt.give, got, tt.want)
			}
		})
	}
}

func TestCombineAcrossVantages(t *testing.T) {
	tests := []struct {
		name string
		give []string // each vantage's verdicts on one block
		want string
	}{
		{
			"one vantage down, the other up: up (never blame the target)",
			[]string{"u@0 d@60 d@120 d@180", "u@0 u@30 u@90 u@150 u@210"},
			"up@0",
		},
		{
			"both down: the brackets intersect",
			// vp1: [0, 58], vp2: [30, 88]: intersection [30, 58], midpoint 44.
			[]string{"u@0 d@60 d@120", "u@0 u@30 d@90 d@150"},
			"up@0 down@44[30,58]",
		},
		{
			"both down, disjoint brackets: the deciding vantage's",
			[]string{"u@0 d@10 d@70 d@130", "u@0 u@50 d@100 d@160"},
			"up@0 down@74[50,98]",
		},
		{
			"recovery seen first by one vantage: up when the first one answers",
			[]string{"u@0 d@60 d@120 u@180", "u@0 u@30 d@90 d@150 d@210"},
			"up@0 down@44[30,58] up@149[119,180]",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var members []track
			for _, s := range tt.give {
				members = append(members, cut(vantageTrack(obs(s), 1000*sec, 1*sec, nil), 200*sec))
			}
			got := show(midpoints(combine(members, anyUp, 1000*sec)))
			if got != tt.want {
				t.Fatalf("combine\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestThresholds(t *testing.T) {
	th := DefaultThresholds
	th.MinMeasurable = 2
	r := th.rule()
	tests := []struct {
		name     string
		up, down int
		want     State
	}{
		{"all up", 4, 0, Up},
		{"all down", 0, 4, Down},
		{"two of four down", 2, 2, Partial},
		{"one of ten up is down", 1, 9, Down},
		{"nine of ten up is up", 9, 1, Up},
		{"too few measurable", 1, 0, Unknown},
		{"nothing measurable", 0, 0, Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := r(tt.up, tt.down, 10); got != tt.want {
				t.Fatalf("rule(%d up, %d down) = %s, want %s", tt.up, tt.down, got, tt.want)
			}
		})
	}
}

func TestSplice(t *testing.T) {
	iv := func(from, to int64, s State) Interval {
		if to != open {
			to *= sec
		}
		return Interval{From: from * sec, To: to, State: s, StartE: from * sec, StartL: from * sec}
	}
	tests := []struct {
		name   string
		stored []Interval
		fresh  []Interval
		k      int64
		want   string
	}{
		{
			"extends the stored state",
			[]Interval{iv(0, open, Up)},
			[]Interval{iv(50, 200, Up), iv(200, open, Down)},
			100, "up[0,200) down[200,)",
		},
		{
			"nothing new: unchanged",
			[]Interval{iv(0, 200, Up), iv(200, open, Down)},
			[]Interval{iv(50, 200, Up), iv(200, open, Down)},
			100, "up[0,200) down[200,)",
		},
		{
			"a late result splits the stored state",
			[]Interval{iv(0, open, Up)},
			[]Interval{iv(60, 150, Up), iv(150, 170, Down), iv(170, open, Up)},
			100, "up[0,150) down[150,170) up[170,)",
		},
		{
			"first derivation of a key",
			nil,
			[]Interval{iv(120, open, Up)},
			100, "up[120,)",
		},
		{
			"stored unknown meets new evidence",
			[]Interval{iv(0, open, Unknown)},
			[]Interval{iv(300, open, Up)},
			100, "unknown[0,300) up[300,)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var parts []string
			for _, x := range splice(tt.stored, tt.fresh, tt.k*sec) {
				to := ""
				if x.To != open {
					to = fmt.Sprint(x.To / sec)
				}
				parts = append(parts, fmt.Sprintf("%s[%d,%s)", x.State, x.From/sec, to))
			}
			if got := strings.Join(parts, " "); got != tt.want {
				t.Fatalf("splice\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}
