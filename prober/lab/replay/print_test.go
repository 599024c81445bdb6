package replay

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestProblems(t *testing.T) {
	base := time.Date(2014, 12, 22, 16, 15, 0, 0, time.UTC)
	w := func(a, b time.Duration) Window {
		return Window{Start: base.Add(a), End: base.Add(b), StoryStart: base.Add(a), StoryEnd: base.Add(b)}
	}
	derived := w(30*time.Second, time.Hour)
	tests := []struct {
		name string
		give Result
		want []string // substrings, one per problem
	}{
		{"all found, close", Result{Round: time.Minute, Scale: 1,
			Matches: []Match{{Truth: w(0, time.Hour), Derived: &derived, StartErr: 30 * time.Second}}}, nil},
		{"missed", Result{Round: time.Minute, Scale: 1, Matches: []Match{{Truth: w(0, time.Hour)}}}, []string{"missed"}},
		{"too far off", Result{Round: time.Minute, Scale: 1,
			Matches: []Match{{Truth: w(0, time.Hour), Derived: &derived, EndErr: -3 * time.Minute}}}, []string{"over 2 rounds"}},
		{"false outage", Result{Round: time.Minute, Scale: 1, False: []Window{w(0, time.Minute)}}, []string{"false country outage"}},
		{"vantage blamed on the country", Result{Round: time.Minute, Scale: 1,
			VantageFaults: []VantageFault{{Vantage: "vp1", CountryOutage: true}}}, []string{"vp1's own uplink"}},
		{"flap blamed on the country", Result{Round: time.Minute, Scale: 1,
			Networks: []NetworkFault{{Network: netip.MustParsePrefix("198.19.1.0/24"), Fault: "flap", CountryOutage: true}}}, []string{"198.19.1.0/24 flap"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.give.Problems(2)
			if len(got) != len(tt.want) {
				t.Fatalf("Problems = %q, want %d", got, len(tt.want))
			}
			for i, want := range tt.want {
				if !strings.Contains(got[i], want) {
					t.Errorf("problem %q, want it to mention %q", got[i], want)
				}
			}
			var b strings.Builder
			tt.give.Write(&b)
			if !strings.Contains(b.String(), "TRUTH START") {
				t.Errorf("Write printed no table:\n%s", b.String())
			}
		})
	}
}

// TestWriteNetworkFaults: a fault that happened once is told in the
// singular, a repeated one with how many times it was seen.
func TestWriteNetworkFaults(t *testing.T) {
	base := time.Date(2014, 12, 21, 18, 0, 0, 0, time.UTC)
	win := Window{Start: base, End: base.Add(time.Hour), StoryStart: base, StoryEnd: base.Add(time.Hour)}
	net1, net2 := netip.MustParsePrefix("198.19.1.0/24"), netip.MustParsePrefix("198.19.2.0/24")
	r := Result{Round: time.Minute, Scale: 1, Networks: []NetworkFault{
		{Network: net1, Fault: "flap", Window: win, Outages: 1},
		{Network: net1, Fault: "flap", Window: win},
		{Network: net2, Fault: "loss", Window: win},
	}}
	var b strings.Builder
	r.Write(&b)
	for _, want := range []string{
		"198.19.1.0/24 flap (2 times, 2014-12-21 18:00 to 2014-12-21 19:00): network outages seen in 1 of them; not a country outage.",
		"198.19.2.0/24 loss (2014-12-21 18:00 to 2014-12-21 19:00): no network outage seen; not a country outage.",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}
