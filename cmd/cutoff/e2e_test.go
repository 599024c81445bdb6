package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/labtest"
	"github.com/cutoffnet/cutoff/prober/lab/replay"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

// TestDemo runs `cutoff demo` as a user would, on the shipped December
// 2014 timeline compressed further (an hour in 2.5 s: rounds of 0.46 s):
// all three outages are found within two rounds of the truth, none during
// the vantage's fault, and the flapping network is marked on that network
// but not as a country outage.
func TestDemo(t *testing.T) {
	labtest.Require(t)
	t.Parallel()
	out := filepath.Join(t.TempDir(), "report.html")
	code, stdout, stderr := cli(t, "demo", "--scale", "1h=2.5s", "--out", out, "--prefix", labtest.Prefix())
	t.Log(stdout)
	if code != exitOK {
		t.Fatalf("demo: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"all 3 outages found within 2 rounds of the truth; no false outage",
		"vp2 lost its own uplink 2014-12-22 04:00 to 2014-12-22 05:00: no country outage reported; it was judged unhealthy",
		"198.19.1.0/24 flap (6 times",
		"not a country outage",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`198\.19\.1\.0/24 flap \(6 times[^)]*\): network outages seen in (\d) of them`).FindStringSubmatch(stdout); m == nil || m[1] < "4" {
		t.Errorf("the flapping network was not marked in most of its flaps: %v", m)
	}
	page, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(page), "2014-12-22 16:1") || !strings.Contains(string(page), `data-state="down"`) {
		t.Error("report.html does not show the outage of 22 December on the story's clock")
	}
}

// TestCorrelatorInLab is issue 6's check in the lab with real time and
// 5 s rounds: the border cut for 90 s gives one country outage within
// 10 s of lab_truth; cutting one vantage's uplink adds none; cutting two
// of the four networks gives partial.
func TestCorrelatorInLab(t *testing.T) {
	labtest.Require(t)
	t.Parallel()
	sc, err := lab.ParseScenario("issue6.scn", strings.NewReader(`
+0s    up
+20s   cut border
+110s  restore border
+130s  cut vp1
+160s  restore vp1
+180s  cut net0
+180s  cut net1
+210s  restore net0
+210s  restore net1
+230s  end
`))
	if err != nil {
		t.Fatal(err)
	}
	url := pgtest.URL(t)
	cfg := lab.Default()
	cfg.Prefix, cfg.StateDir = labtest.Prefix(), t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	res, err := replay.Run(ctx, replay.Options{DB: url, Scenario: sc, Lab: cfg, Round: 5 * time.Second, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	res.Write(&b)
	t.Log(b.String())
	if len(res.Matches) != 1 || res.Matches[0].Derived == nil {
		t.Fatalf("border cut: %+v", res.Matches)
	}
	m := res.Matches[0]
	if m.StartErr.Abs() > 10*time.Second || m.EndErr.Abs() > 10*time.Second {
		t.Errorf("border cut placed %v / %v off, want within 10 s", m.StartErr, m.EndErr)
	}
	if len(res.False) != 0 {
		t.Errorf("false country outages: %+v", res.False)
	}
	if len(res.VantageFaults) != 1 || res.VantageFaults[0].CountryOutage || !res.VantageFaults[0].SetAside {
		t.Errorf("vp1's uplink cut: %+v", res.VantageFaults)
	}
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var partial int
	net := res.Networks[0].Window
	st.Pool().QueryRow(ctx, `SELECT count(*) FROM country_intervals WHERE state = 'partial' AND during && tstzrange($1, $2)`,
		net.Start, net.End).Scan(&partial)
	if partial == 0 {
		t.Error("no partial country interval while two of four networks were cut")
	}
	for _, n := range res.Networks {
		if n.Outages != 1 {
			t.Errorf("%s cut: %d network outages, want 1", n.Network, n.Outages)
		}
	}
}
