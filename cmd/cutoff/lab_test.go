package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/labtest"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

// asCLI makes the test binary behave as the cutoff binary, so the serve
// daemon that `cutoff lab up` starts (os.Executable) can be this binary.
const asCLI = "CUTOFF_TEST_AS_CLI"

func TestLabRunBadScenario(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.scn")
	os.WriteFile(file, []byte("+0s up\n+1s cut\n+2s loss net1 5\n"), 0o644)
	code, _, stderr := cli(t, "lab", "run", "--state-dir", dir, file)
	if code != exitUsage || !strings.Contains(stderr, file+":2:") || !strings.Contains(stderr, file+":3:") {
		t.Errorf("exit %d, stderr %q; want 2 naming lines 2 and 3", code, stderr)
	}
	os.WriteFile(file, []byte("+0s up\n+1s cut narnia\n"), 0o644)
	code, _, stderr = cli(t, "lab", "run", "--state-dir", dir, file)
	if code != exitUsage || !strings.Contains(stderr, file+`:2: unknown lab target "narnia"`) {
		t.Errorf("exit %d, stderr %q; want 2 naming line 2's target", code, stderr)
	}
	code, _, stderr = cli(t, "lab", "run", "--state-dir", dir, "--scale", "fast", file)
	if code != exitUsage || !strings.Contains(stderr, "--scale") {
		t.Errorf("exit %d, stderr %q; want 2 for a bad --scale", code, stderr)
	}
}

// TestLabCLI drives a lab through the commands as a user would: up (with
// its serve daemon), status, cut, exec, a scenario run into the database,
// down.
func TestLabCLI(t *testing.T) {
	labtest.Require(t)
	p, dir := labtest.Prefix(), t.TempDir()
	flags := []string{"--prefix", p, "--state-dir", dir}
	t.Cleanup(func() {
		cfg := lab.Default()
		cfg.Prefix, cfg.StateDir = p, dir
		lab.Down(context.Background(), cfg)
	})
	with := func(args ...string) []string { return append(args, flags...) }

	code, out, stderr := cli(t, with("lab", "status")...)
	if code != exitFailure || !strings.Contains(stderr, "lab is not up") {
		t.Errorf("status before up: exit %d, %q", code, stderr)
	}
	code, out, stderr = cli(t, with("lab", "up")...)
	if code != exitOK || !strings.Contains(out, "is up; serve daemon pid") {
		t.Fatalf("up: exit %d\n%s%s", code, out, stderr)
	}
	st := lab.ServeState(filepath.Join(dir, p))
	if !st.Running {
		t.Fatalf("serve daemon not running after up: %+v", st)
	}
	code, out, _ = cli(t, with("lab", "up")...)
	if code != exitOK || !strings.Contains(out, "pid "+strconv.Itoa(st.PID)) {
		t.Errorf("up again: exit %d, %q; want the same daemon %d", code, out, st.PID)
	}
	code, out, _ = cli(t, with("lab", "cut", "border")...)
	if code != exitOK {
		t.Errorf("cut border: exit %d", code)
	}
	code, out, _ = cli(t, with("lab", "status")...)
	if code != exitOK || !strings.Contains(out, "faults: cut border") || !strings.Contains(out, "CUT") ||
		!strings.Contains(out, "pid "+strconv.Itoa(st.PID)) {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	code, _, _ = cli(t, with("lab", "restore", "all")...)
	if code != exitOK {
		t.Errorf("restore all: exit %d", code)
	}
	code, _, stderr = cli(t, with("lab", "loss", "narnia", "5%")...)
	if code != exitUsage {
		t.Errorf("loss on an unknown target: exit %d %q, want 2", code, stderr)
	}
	if code, _, _ = cli(t, append(with("lab", "exec"), "vp1", "--", "true")...); code != 0 {
		t.Errorf("exec true: exit %d", code)
	}
	if code, _, _ = cli(t, append(with("lab", "exec"), "vp1", "--", "sh", "-c", "exit 7")...); code != 7 {
		t.Errorf("exec exit 7: exit %d", code)
	}

	// The other faults from the command line, read back with status --json.
	status := func() lab.Status {
		t.Helper()
		code, out, stderr := cli(t, with("lab", "status", "--json")...)
		var st struct{ Status lab.Status }
		if code != exitOK {
			t.Fatalf("status --json: exit %d %s", code, stderr)
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil || len(st.Status.Links) == 0 {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		return st.Status
	}
	if code, _, stderr = cli(t, with("lab", "loss", "net2", "20%")...); code != exitOK {
		t.Errorf("loss net2 20%%: exit %d %s", code, stderr)
	}
	loss := -1
	for _, k := range status().Links {
		if k.Target == "net2" {
			loss = k.Loss
		}
	}
	if loss != 20 {
		t.Errorf("status after loss net2 20%%: loss %d%%", loss)
	}
	code, _, stderr = cli(t, with("lab", "delay", "vp2", "50ms")...)
	if netem := status().Netem; netem && code != exitOK || !netem && (code == exitOK || !strings.Contains(stderr, "netem")) {
		t.Errorf("delay vp2 50ms with netem %v: exit %d %q", netem, code, stderr)
	}
	if code, _, stderr = cli(t, with("lab", "decay", "net1", "--over", "300ms")...); code != exitOK {
		t.Errorf("decay net1: exit %d %s", code, stderr)
	}
	for _, n := range status().Networks {
		if n.Name == "net1" && n.Answering != 0 {
			t.Errorf("net1 after decay: %d hosts answering, want 0", n.Answering)
		}
	}
	if code, _, _ = cli(t, with("lab", "restore", "all")...); code != exitOK {
		t.Errorf("restore all: exit %d", code)
	}
	for _, n := range status().Networks {
		if n.Answering != n.Hosts {
			t.Errorf("%s after restore: %d of %d hosts answering", n.Name, n.Answering, n.Hosts)
		}
	}
	for _, k := range status().Links {
		if !k.IsUp || k.Loss != 0 {
			t.Errorf("link %s-%s after restore: up %v, loss %d%%", k.Up, k.Down, k.IsUp, k.Loss)
		}
	}
	bad := []struct {
		args []string
		want string
	}{
		{[]string{"lab", "cut", "all"}, "all"},
		{[]string{"lab", "cut"}, "TARGET"},
		{[]string{"lab", "loss", "net1", "150%"}, "150"},
		{[]string{"lab", "decay", "net1", "--over", "-1s"}, "--over"},
		{[]string{"lab", "exec", "nowhere", "--", "true"}, "nowhere"},
		{[]string{"lab", "exec", "vp1"}, "command"},
	}
	for _, tt := range bad {
		args := with(tt.args...)
		if tt.args[1] == "exec" { // flags before the role and "--"
			args = append(append([]string{"lab", "exec"}, flags...), tt.args[2:]...)
		}
		code, _, stderr := cli(t, args...)
		if code != exitUsage || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d %q, want 2 naming %q", tt.args, code, stderr, tt.want)
		}
	}

	url := pgtest.URL(t)
	scn, truth := filepath.Join(dir, "s.scn"), filepath.Join(dir, "truth.json")
	os.WriteFile(scn, []byte("+0s cut net1\n+300ms restore net1\n"), 0o644)
	code, out, stderr = cli(t, "lab", "run", scn, "--db", url, "--truth", truth, "--prefix", p, "--state-dir", dir)
	if code != exitOK || !strings.Contains(out, "run s-") {
		t.Fatalf("run: exit %d\n%s%s", code, out, stderr)
	}
	runID := strings.Fields(out[strings.Index(out, "run s-"):])[1]
	runID = strings.TrimSuffix(runID, ":")
	s, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rows, err := s.LabTruthOf(context.Background(), runID)
	if err != nil || len(rows) != 1 || rows[0].Target != "net:198.19.1.0/24" || rows[0].EndedAt == nil {
		t.Errorf("lab_truth of %s: %+v %v", runID, rows, err)
	}
	if _, err := os.Stat(truth); err != nil {
		t.Errorf("truth file: %v", err)
	}

	// Register the country, then probe it from vp1 as an operator would:
	// cutoff lab exec vp1 -- cutoff probe --once (here the test binary
	// plays cutoff).
	code, out, stderr = cli(t, with("lab", "seed", "--db", url)...)
	if code != exitOK || !strings.Contains(out, "census from vp1: 4 blocks, 4 with responsive addresses") {
		t.Fatalf("seed: exit %d\n%s%s", code, out, stderr)
	}
	for _, mode := range []string{"--sweep", "--once"} {
		code, out, stderr = cli(t, append(with("lab", "exec"), "vp1", "--", os.Args[0], "probe", "--db", url, "--vantage", "vp1", mode,
			"--round", "2s", "--timeout", "300ms", "--spool", filepath.Join(dir, "spool"), "--allow-reserved", "198.18.0.0/15")...)
		if code != exitOK {
			t.Fatalf("probe %s in vp1: exit %d\n%s%s", mode, code, out, stderr)
		}
	}
	var replies, timeouts, sent, verdicts int64
	s.Pool().QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE outcome = 'reply'), count(*) FILTER (WHERE outcome = 'timeout'),
		(SELECT probes_sent FROM vantages WHERE name = 'vp1'), (SELECT count(*) FROM observations WHERE state = 'up')
		FROM probe_results WHERE vantage = 'vp1'`).Scan(&replies, &timeouts, &sent, &verdicts)
	// The sweep: 90 responsive hosts, 28 TCP services, 4 DNS servers and 5
	// control targets answer; 926 silent or ICMP-filtering addresses time out.
	if replies < 90+28+4+5 || timeouts < 900 || verdicts < 8 || sent == 0 {
		t.Errorf("after probing from vp1: %d replies, %d timeouts, %d up verdicts, last run %d probes", replies, timeouts, verdicts, sent)
	}

	code, out, _ = cli(t, with("lab", "down")...)
	if code != exitOK || !strings.Contains(out, "9 namespaces removed") {
		t.Errorf("down: exit %d, %q", code, out)
	}
	if names, _ := lab.Namespaces(p); len(names) != 0 {
		t.Errorf("namespaces left after down: %v", names)
	}
	if code, out, _ = cli(t, with("lab", "down")...); code != exitOK {
		t.Errorf("down twice: exit %d, %q", code, out)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(st.PID) + "/cmdline"); err == nil {
		if b, _ := os.ReadFile("/proc/" + strconv.Itoa(st.PID) + "/cmdline"); len(b) > 0 {
			t.Errorf("serve daemon %d still running after down", st.PID)
		}
	}
}
