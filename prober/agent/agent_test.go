package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/labdb"
	"github.com/cutoffnet/cutoff/prober/lab/labtest"
	"github.com/cutoffnet/cutoff/prober/spool"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtemp"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

// envChild makes the test binary run an agent (configured by the JSON in
// the variable) instead of the tests: crash and signal tests need a real
// process to kill.
const envChild = "CUTOFF_AGENT_CHILD"

func TestMain(m *testing.M) {
	if js := os.Getenv(envChild); js != "" {
		os.Exit(child(js))
	}
	pgtest.Main(m)
}

func child(js string) int {
	var cfg Config
	if err := json.Unmarshal([]byte(js), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	a, err := New(cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := a.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// world is a lab with its country registered and censused in a database.
type world struct {
	lab *lab.Lab
	url string
	st  *store.Store
}

func newWorld(t *testing.T, url string) *world {
	t.Helper()
	labtest.Require(t)
	l := labtest.Up(t, lab.Default())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := labdb.Seed(ctx, l, st); err != nil {
		t.Fatal(err)
	}
	if _, err := labdb.Census(ctx, l, st, "vp1", []uint16{80, 443}, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	return &world{lab: l, url: url, st: st}
}

func (w *world) config(t *testing.T, vantage string) Config {
	cfg := Defaults()
	cfg.DB = w.url
	cfg.Vantage = vantage
	cfg.Round = 2 * time.Second
	cfg.Timeout = 300 * time.Millisecond
	cfg.Spool = t.TempDir()
	cfg.AllowReserved = []string{prober.Lab.String()}
	cfg.Rate = 5000
	cfg.Drain = 20 * time.Second
	cfg.Heartbeat = time.Second
	cfg.Seed = 1
	return cfg
}

// run runs an agent in-process inside a vantage's namespace.
func (w *world) run(ctx context.Context, t *testing.T, cfg Config, log io.Writer) (*Agent, <-chan error) {
	t.Helper()
	if log == nil {
		log = io.Discard
	}
	a, err := New(cfg, slog.New(slog.NewTextHandler(log, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.lab.Do(cfg.Vantage, func() error { return a.Run(ctx) }) }()
	return a, done
}

// start runs an agent as a child process inside a vantage's namespace.
func (w *world) start(t *testing.T, cfg Config) (*os.Process, *syncBuffer, <-chan error) {
	t.Helper()
	js, _ := json.Marshal(cfg)
	cmd := w.lab.Command(context.Background(), cfg.Vantage, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+string(js))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// done delivers the exit to the test; exited lets the cleanup know
	// the process is gone whether or not the test took the value.
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	return cmd.Process, out, done
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func count(t *testing.T, st *store.Store, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := st.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// scrape fetches /metrics from addr inside a vantage's namespace.
func (w *world) scrape(t *testing.T, vantage, addr string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, a string) (c net.Conn, err error) {
		err = w.lab.Do(vantage, func() error {
			c, err = (&net.Dialer{}).DialContext(ctx, network, a)
			return err
		})
		return c, err
	}}}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// metricSum adds up the samples of a series in a /metrics page, over all
// its labels.
func metricSum(t *testing.T, page, name string) int64 {
	t.Helper()
	var sum float64
	found := false
	for line := range strings.Lines(page) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(rest[strings.LastIndexByte(rest, ' ')+1:], &v); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		sum += v
		found = true
	}
	if !found {
		t.Fatalf("/metrics has no %s", name)
	}
	return int64(sum)
}

func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSweepAndOnce(t *testing.T) {
	t.Parallel()
	w := newWorld(t, pgtest.URL(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cfg := w.config(t, "vp1")
	cfg.Sweep = true
	a, done := w.run(ctx, t, cfg, nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A reply from every responsive host, a timeout from every silent one.
	responsive := map[netip.Addr]bool{}
	for _, tg := range w.lab.Responsive(prober.KindICMP) {
		responsive[tg.Addr] = true
	}
	rows, err := w.st.Pool().Query(ctx, `SELECT addr, outcome FROM probe_results WHERE kind = 'icmp' AND vantage = 'vp1' AND addr << '198.19.0.0/16'`)
	if err != nil {
		t.Fatal(err)
	}
	var addr netip.Addr
	var outcome string
	seen := 0
	if _, err := pgx.ForEachRow(rows, []any{&addr, &outcome}, func() error {
		seen++
		if responsive[addr] != (outcome == "reply") {
			return fmt.Errorf("%s: %s (responsive %v)", addr, outcome, responsive[addr])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if seen != 4*254 {
		t.Fatalf("%d ICMP results, want every host address of the four /24s", seen)
	}
	for _, kind := range []prober.Kind{prober.KindTCP, prober.KindDNS} {
		want := int64(len(w.lab.Responsive(kind)))
		if got := count(t, w.st, `SELECT count(*) FROM probe_results WHERE kind = $1 AND outcome = 'reply' AND addr << '198.19.0.0/16'`, kind.String()); got != want {
			t.Fatalf("%s replies %d, want %d", kind, got, want)
		}
	}
	if got := count(t, w.st, `SELECT count(*) FROM observations WHERE vantage = 'vp1' AND state = 'up'`); got != 4 {
		t.Fatalf("%d up verdicts, want the 4 blocks", got)
	}
	if n := count(t, w.st, `SELECT count(*) FROM probe_results WHERE vantage = 'vp1'`); n != a.Stats().Results {
		t.Fatalf("database holds %d results, the agent produced %d", n, a.Stats().Results)
	}

	// One adaptive round from vp2: every block judged, far fewer probes.
	cfg = w.config(t, "vp2")
	cfg.Once = true
	a, done = w.run(ctx, t, cfg, nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := count(t, w.st, `SELECT count(DISTINCT block) FROM observations WHERE vantage = 'vp2' AND state = 'up'`); got != 4 {
		t.Fatalf("vp2 judged %d blocks up, want 4 (net3 on TCP)", got)
	}
	n := count(t, w.st, `SELECT count(*) FROM probe_results WHERE vantage = 'vp2'`)
	if n != a.Stats().Results || n > 100 {
		t.Fatalf("vp2: %d results stored, %d produced; an adaptive round should need a few dozen", n, a.Stats().Results)
	}
	if got := count(t, w.st, `SELECT probes_sent FROM vantages WHERE name = 'vp2'`); got != n {
		t.Fatalf("vp2's heartbeat reports %d probes, %d stored", got, n)
	}
	// The round as it ran (collector_test checks how it is measured).
	round := value(t, a.m.round)
	t.Logf("vp2's round took %.3f s (configured %v)", round, cfg.Round)
	if round <= 0 || round == cfg.Round.Seconds() || round > 3*cfg.Round.Seconds() {
		t.Fatalf("cutoff_round_duration_seconds %v for a %v round: not measured", round, cfg.Round)
	}
	// Clock honesty: the run measured its clock against the database.
	if got := count(t, w.st, `SELECT count(*) FROM vantages WHERE name = 'vp2' AND abs(clock_offset_ms) < 1000 AND clock_checked_at IS NOT NULL`); got != 1 {
		t.Fatal("vp2's row records no clock offset (or one over 1 s on a machine whose clock is the database's)")
	}
}

// TestDatabaseAway stops PostgreSQL for a while under a running agent:
// every result produced lands exactly once after it returns.
func TestDatabaseAway(t *testing.T) {
	t.Parallel()
	labtest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A cluster of our own: pausing the shared one would break other tests.
	cl, err := pgtemp.Start(ctx, pgtemp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Stop() })
	boot, err := store.Open(ctx, cl.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := boot.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	boot.Close()
	w := newWorld(t, cl.URL("postgres"))

	cfg := w.config(t, "vp1")
	cfg.Metrics = "127.0.0.1:0"
	actx, stop := context.WithCancel(ctx)
	defer stop()
	a, done := w.run(actx, t, cfg, nil)
	waitFor(t, "results in the database", 30*time.Second, func() bool {
		return count(t, w.st, `SELECT count(*) FROM probe_results`) > 20
	})
	w.st.Close()
	if err := cl.Pause(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "batches to pile up in the spool", 30*time.Second, func() bool { return a.Stats().Pending >= 5 })
	spooled := a.Stats().Pending
	if err := cl.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the spool to drain", 60*time.Second, func() bool { return a.Stats().Pending == 0 })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, cl.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	produced := a.Stats().Results
	stored := count(t, st, `SELECT count(*) FROM probe_results`)
	t.Logf("%d batches spooled while the database was away; %d results produced, %d stored", spooled, produced, stored)
	if stored != produced {
		t.Fatalf("%d results stored, %d produced: every result must land exactly once", stored, produced)
	}
	if got := count(t, st, `SELECT probes_sent FROM vantages WHERE name = 'vp1'`); got != produced {
		t.Fatalf("the final heartbeat reports %d, the agent produced %d", got, produced)
	}
}

// spooled reads the rows waiting in a stopped agent's spool.
func spooled(t *testing.T, dir string) []store.Result {
	t.Helper()
	sp, err := spool.Open(filepath.Join(dir, "batches"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	var rs []store.Result
	for sp.Pending() > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		rec, err := sp.Next(ctx)
		cancel()
		if err != nil {
			break
		}
		b, err := decodeBatch(rec.Data)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, b.Results...)
	}
	return rs
}

// TestKillAndRestart: an agent killed with SIGKILL while the database is
// away leaves its results in the spool; restarted, it replays them, and
// nothing is counted twice. Nothing it reported finished before the kill
// is lost: the kill takes at most the probes in flight.
func TestKillAndRestart(t *testing.T) {
	t.Parallel()
	labtest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := pgtemp.Start(ctx, pgtemp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Stop() })
	boot, err := store.Open(ctx, cl.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := boot.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	boot.Close()
	w := newWorld(t, cl.URL("postgres"))
	cfg := w.config(t, "vp1")
	cfg.Metrics = "127.0.0.1:0"

	proc, out, done := w.start(t, cfg)
	var addr string
	waitFor(t, "the metrics address in the log", 30*time.Second, func() bool {
		m := regexp.MustCompile(`msg="serving metrics".* addr=(\S+)`).FindStringSubmatch(out.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	waitFor(t, "results in the database", 30*time.Second, func() bool {
		return count(t, w.st, `SELECT count(*) FROM probe_results`) > 20
	})
	w.st.Close()
	if err := cl.Pause(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // results go to the spool
	// What the agent reports, just before the kill: results finished
	// (handed over by the scheduler) and written into the spool.
	page := w.scrape(t, "vp1", addr)
	finished := metricSum(t, page, "cutoff_probes_total")
	written := metricSum(t, page, "cutoff_results_spooled_total")
	// The collector writes a result into the spool within a millisecond
	// or so of its hand-over: well inside this pause, and well inside the
	// 250 ms flush interval that bounded the loss before.
	time.Sleep(100 * time.Millisecond)
	killAt := time.Now()
	if err := proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	waiting := spooled(t, cfg.Spool)
	if len(waiting) == 0 {
		t.Fatalf("nothing in the spool after the kill\n%s", out.String())
	}
	if err := cl.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, cl.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	before := count(t, st, `SELECT count(*) FROM probe_results`)
	// Rows of the spool that a lost acknowledgement let into the
	// database already must not count twice.
	var already int64
	for _, r := range waiting {
		already += count(t, st, `SELECT count(*) FROM probe_results WHERE sent_at = $1 AND addr = $2 AND vantage = $3 AND kind = $4 AND port = $5`,
			r.SentAt, r.Addr, r.Vantage, r.Kind, int32(r.Port))
	}

	// Restart for one round: the spool drains, then the round's results.
	cfg.Once = true
	_, out2, done2 := w.start(t, cfg)
	if err := <-done2; err != nil {
		t.Fatalf("restarted agent: %v\n%s", err, out2.String())
	}
	round := count(t, st, `SELECT probes_sent FROM vantages WHERE name = 'vp1'`)
	after := count(t, st, `SELECT count(*) FROM probe_results`)
	t.Logf("before restart %d stored, %d spooled (%d of them stored already), round after restart %d, after %d",
		before, len(waiting), already, round, after)
	if want := before + int64(len(waiting)) - already + round; after != want {
		t.Fatalf("%d results stored, want %d", after, want)
	}
	// The loss bound: every result reported finished before the kill is
	// in the database (the restarted agent's own all come after killAt).
	stored := count(t, st, `SELECT count(*) FROM probe_results WHERE vantage = 'vp1' AND sent_at < $1`, killAt)
	t.Logf("before the kill: %d results finished, %d written into the spool; %d of that life stored", finished, written, stored)
	if stored < written || stored < finished {
		t.Fatalf("%d results of the killed agent stored; it had reported %d finished and %d spooled", stored, finished, written)
	}
	if rest := spooled(t, cfg.Spool); len(rest) != 0 {
		t.Fatalf("%d results still in the spool", len(rest))
	}
}

// TestSIGTERM: SIGTERM flushes everything and exits 0.
func TestSIGTERM(t *testing.T) {
	t.Parallel()
	w := newWorld(t, pgtest.URL(t))
	cfg := w.config(t, "vp1")
	proc, out, done := w.start(t, cfg)
	waitFor(t, "results in the database", 30*time.Second, func() bool {
		return count(t, w.st, `SELECT count(*) FROM probe_results`) > 10
	})
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30 s after SIGTERM")
	}
	stored := count(t, w.st, `SELECT count(*) FROM probe_results`)
	if got := count(t, w.st, `SELECT probes_sent FROM vantages WHERE name = 'vp1'`); got != stored {
		t.Fatalf("the agent produced %d results, %d stored", got, stored)
	}
	if !strings.Contains(out.String(), "msg=stopped") {
		t.Fatalf("no clean stop logged:\n%s", out.String())
	}
}

// TestCorruptSpool: a damaged batch in the spool is reported and skipped;
// the good batches before and after it still land.
func TestCorruptSpool(t *testing.T) {
	t.Parallel()
	w := newWorld(t, pgtest.URL(t))
	cfg := w.config(t, "vp1")
	// Three segments of batches from an earlier life of the agent.
	sp, err := spool.Open(cfg.spoolDir(), spool.Options{SegmentBytes: 1500})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2014, 12, 22, 12, 0, 0, 0, time.UTC)
	var want int
	for i := range 9 {
		b := store.Batch{}
		for j := range 20 {
			b.Results = append(b.Results, store.Result{Vantage: "vp1", Kind: "icmp", Addr: netip.AddrFrom4([4]byte{198, 19, 0, byte(j + 1)}),
				SentAt: base.Add(time.Duration(i*100+j) * time.Second), Outcome: "timeout"})
		}
		data, err := encodeBatch(&b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sp.Append(data); err != nil {
			t.Fatal(err)
		}
		want += 20
	}
	sp.Close()
	segs, _ := filepath.Glob(filepath.Join(cfg.spoolDir(), "seg-*.spool"))
	if len(segs) < 3 {
		t.Fatalf("%d segments, want at least 3", len(segs))
	}
	// Flip a byte inside the first batch of the second segment.
	f, err := os.OpenFile(segs[1], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var one [1]byte
	f.ReadAt(one[:], 100)
	one[0] ^= 0xff
	f.WriteAt(one[:], 100)
	f.Close()
	want -= 20

	var log syncBuffer
	cfg.Once = true
	a, done := w.run(context.Background(), t, cfg, &log)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	old := count(t, w.st, `SELECT count(*) FROM probe_results WHERE sent_at < '2014-12-23'`)
	if old != int64(want) {
		t.Fatalf("%d spooled results landed, want %d (all but the damaged batch)", old, want)
	}
	if !strings.Contains(log.String(), "spool: skipping corrupt data") || a.sp.Corrupt() == 0 {
		t.Fatalf("damage not reported:\n%s", log.String())
	}
}

// TestProberRoleAndMetrics: the agent works with a login of the
// cutoff_prober role, and serves the documented series on /metrics.
func TestProberRoleAndMetrics(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	w := newWorld(t, url)
	role := fmt.Sprintf("vp_%d", time.Now().UnixNano()%1e9)
	if _, err := w.st.Pool().Exec(context.Background(), `CREATE ROLE `+role+` LOGIN IN ROLE cutoff_prober`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.st.Pool().Exec(context.Background(), `DROP OWNED BY `+role+`; DROP ROLE `+role) })

	cfg := w.config(t, "vp1")
	cfg.DB = url + " user=" + role
	cfg.Metrics = "127.0.0.1:0"
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	a, done := w.run(ctx, t, cfg, nil)
	waitFor(t, "results in the database", 30*time.Second, func() bool {
		return count(t, w.st, `SELECT count(*) FROM probe_results`) > 10
	})
	// The metrics listener is inside vp1's namespace: dial it from there.
	body := w.scrape(t, "vp1", a.MetricsAddr())
	for _, want := range []string{
		`cutoff_probes_total{kind="icmp",outcome="reply"}`,
		`cutoff_probes_total{kind="dns",outcome="reply"}`,
		`cutoff_probe_rtt_seconds_bucket{kind="icmp"`,
		"cutoff_round_duration_seconds",
		"cutoff_results_spooled_total",
		"cutoff_batches_dropped_total 0",
		"cutoff_spool_batches_lost_total 0",
		"cutoff_round_lag_seconds",
		"cutoff_spool_bytes",
		"cutoff_spool_age_seconds",
		"cutoff_spool_pending_batches",
		`cutoff_ingested_rows_total{table="probe_results"}`,
		"cutoff_database_up 1",
		"cutoff_clock_offset_seconds",
		`cutoff_icmp_rejected_total{reason="forged"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The role could write results; it cannot rewrite them.
	conn, err := pgx.Connect(context.Background(), cfg.DB)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, sql := range []string{`UPDATE probe_results SET outcome = 'reply'`, `DELETE FROM probe_results`, `DELETE FROM observations`} {
		if _, err := conn.Exec(context.Background(), sql); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s as %s: %v, want permission denied", sql, role, err)
		}
	}
}

// TestUndurableResultsFailRun: results that never reach the spool (here
// it is too small to take a single batch) are lost when the agent stops;
// Run must say so with an error (a non-zero exit), in daemon mode too,
// rather than stop cleanly.
func TestUndurableResultsFailRun(t *testing.T) {
	t.Parallel()
	w := newWorld(t, pgtest.URL(t))
	cfg := w.config(t, "vp1")
	cfg.SpoolMax = 64
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var log syncBuffer
	a, done := w.run(ctx, t, cfg, &log)
	waitFor(t, "results handed over", 30*time.Second, func() bool { return a.Stats().Results > 10 })
	stop()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("no stop a minute after the cancel")
	}
	s := a.Stats()
	if err == nil || !strings.Contains(err.Error(), "results lost") || !strings.Contains(err.Error(), "only in memory") {
		t.Fatalf("Run: %v, want the results lost named (stats %+v)", err, s)
	}
	if s.Spooled != 0 || !strings.Contains(log.String(), "results could not be made durable") {
		t.Fatalf("stats %+v; log:\n%s", s, log.String())
	}
	t.Logf("Run: %v", err)
}
