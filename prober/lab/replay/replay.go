// Package replay plays a timeline of outages on the lab with the whole
// system running as it would in production, and scores what the system
// derived against the lab's ground truth.
//
// It brings the lab up, registers its country in the database and runs a
// census, starts one `cutoff probe` per vantage (inside the vantage's
// namespace) and `cutoff correlate --follow`, as separate processes of
// the given binary, plays the scenario (recording lab_truth), lets the
// probers and the correlator catch up, stops them, and reads back the
// country outages, network outages and vantage health the correlator
// wrote. `cutoff demo` and the end-to-end tests are built on it.
package replay

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/labdb"
	"github.com/cutoffnet/cutoff/store"
)

// December2014 is the shipped scenario: North Korea's cut-offs of 22 and
// 23 December 2014, with the unstable weekend before and a vantage fault.
//
//go:embed december-2014.scn
var December2014 []byte

// Options configure a replay. Scenario is required.
type Options struct {
	// DB is the database's URL; empty means $DATABASE_URL or else libpq's
	// PG* variables, for this process and for the probers and the
	// correlator it starts (they inherit the environment).
	DB       string
	Scenario *lab.Scenario
	// Exe is the cutoff binary the probers and the correlator run as
	// (default: this executable); Env is added to their environment.
	Exe string
	Env []string
	// Lab is the lab to bring up (default lab.Default() with prefix
	// "cutoffreplay"). Its country stands in for the story's.
	Lab lab.Config
	// Scale overrides the scenario's (story seconds per wall second).
	Scale float64
	// Round is the probers' round in wall time; by default Trinocular's
	// 11 minutes of story time, compressed like the rest.
	Round time.Duration
	// Timeout is the probe timeout in wall time (default a fifth of the
	// round, at most a second: the lab answers in microseconds).
	Timeout time.Duration
	// Dir holds the spools, logs and the truth file (default a new
	// temporary directory, removed unless Keep).
	Dir  string
	Keep bool
	// Progress, when set, gets a line now and then while the replay runs.
	Progress func(Progress)
	Log      *slog.Logger
}

// Progress is the replay's state, for a progress line.
type Progress struct {
	Story   time.Time // the story clock (zero without one)
	Done    float64   // share of the scenario played
	Country string    // the country's state as the correlator has it now
	Event   string    // the last event applied
}

// Window is a span of time on both clocks.
type Window struct {
	Start, End           time.Time // wall clock (as stored)
	StoryStart, StoryEnd time.Time // story clock
}

// Match pairs a true country outage with the outage derived for it.
type Match struct {
	Truth   Window
	Derived *Window // nil: missed
	// Errors of the derived start and end, in story time.
	StartErr, EndErr time.Duration
	Vantages         int
}

// Result is what the replay found.
type Result struct {
	RunID    string
	Scenario string
	Country  string
	Scale    float64
	Round    time.Duration // wall time
	// Period the scenario covered, on both clocks.
	Period Window
	// Matches are the scenario's whole-country cuts and what was derived.
	Matches []Match
	// False are derived country outages that match no cut.
	False []Window
	// Faults of vantages (their own uplinks) and whether any country
	// outage was derived during one.
	VantageFaults []VantageFault
	// Networks lists, per network fault of the scenario (flap, loss,
	// cut of one network), the network outages derived during it.
	Networks []NetworkFault
	// Unhealthy lists the vantages' unhealthy periods the correlator
	// recorded.
	Unhealthy []Health
	// Story maps a wall time to the story clock.
	Story func(time.Time) time.Time `json:"-"`
}

// VantageFault is a cut of a vantage's own uplink.
type VantageFault struct {
	Vantage       string
	Window        Window
	CountryOutage bool // a country outage was derived during it: wrong
	SetAside      bool // the vantage was judged unhealthy during it
}

// NetworkFault is a fault of one network and what was derived.
type NetworkFault struct {
	Network       netip.Prefix
	Fault         string
	Window        Window
	Outages       int  // network outages derived during it
	CountryOutage bool // a country outage was derived during it: wrong
}

// Health is an unhealthy period of a vantage.
type Health struct {
	Vantage string
	Window  Window
	Reason  string
}

// Run plays the replay. The lab is taken down at the end.
func Run(ctx context.Context, opt Options) (*Result, error) {
	if opt.Scenario == nil {
		return nil, errors.New("replay: a scenario is required")
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opt.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("replay: %w", err)
		}
		opt.Exe = exe
	}
	scale := opt.Scenario.Scale
	if opt.Scale > 0 {
		scale = opt.Scale
	}
	if scale <= 0 {
		scale = 1
	}
	if opt.Round == 0 {
		opt.Round = time.Duration(float64(11*time.Minute) / scale)
	}
	if opt.Round < 100*time.Millisecond {
		return nil, fmt.Errorf("replay: a round of %v is too short for the lab (at scale %.0f); use a smaller scale", opt.Round, scale)
	}
	if opt.Timeout == 0 {
		opt.Timeout = min(opt.Round/5, time.Second)
	}
	cfg := opt.Lab
	if cfg.Prefix == "" {
		cfg = lab.Default()
		cfg.Prefix = "cutoffreplay"
	}
	if err := opt.Scenario.Check(cfg); err != nil {
		return nil, err
	}
	if opt.Dir == "" {
		dir, err := os.MkdirTemp("", "cutoff-replay-")
		if err != nil {
			return nil, fmt.Errorf("replay: %w", err)
		}
		opt.Dir = dir
		if !opt.Keep {
			defer os.RemoveAll(dir)
		}
	}

	st, err := store.Open(ctx, opt.DB)
	if err != nil {
		return nil, err
	}
	defer st.Close()

	log.Info("bringing the lab up", "prefix", cfg.Prefix)
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := l.Down(dctx); err != nil {
			log.Warn("lab down failed", "err", err)
		}
	}()
	sctx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	go l.Serve(sctx, log)

	if err := labdb.Seed(ctx, l, st); err != nil {
		return nil, err
	}
	cs, err := labdb.Census(ctx, l, st, l.Vantages()[0].Name, []uint16{80, 443}, max(opt.Timeout, 200*time.Millisecond))
	if err != nil {
		return nil, err
	}
	log.Info("census done", "blocks", cs.Blocks, "responsive", cs.Responsive, "targets", cs.New)

	// The system: a prober per vantage, and the correlator.
	var procs []*proc
	stopAll := func() {
		for _, p := range procs {
			p.stop(30 * time.Second)
		}
	}
	defer stopAll()
	for _, v := range l.Vantages() {
		args := []string{"probe", "--db", opt.DB, "--vantage", v.Name,
			"--round", opt.Round.String(), "--timeout", opt.Timeout.String(),
			"--allow-reserved", prober.Lab.String(), "--spool", filepath.Join(opt.Dir, "spool-"+v.Name),
			"--flush", "100ms", "--heartbeat", min(5*time.Second, 10*opt.Round).String(),
			"--time-scale", fmt.Sprint(float64(11*time.Minute) / float64(opt.Round))}
		p, err := start(ctx, l.Command(ctx, v.Name, opt.Exe, args...), opt, "probe-"+v.Name)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	cor, err := start(ctx, exec.CommandContext(ctx, opt.Exe, "correlate", "--db", opt.DB, "--follow", "--interval", "500ms"), opt, "correlate")
	if err != nil {
		return nil, err
	}
	procs = append(procs, cor)

	// Let the probers settle (beliefs, controls) before the story begins.
	if err := sleep(ctx, 3*opt.Round+time.Second); err != nil {
		return nil, err
	}
	for _, p := range procs {
		if p.exited() {
			return nil, fmt.Errorf("replay: %s exited early; see %s", p.name, p.logPath)
		}
	}

	country := l.Country().Code
	var mu sync.Mutex
	last := ""
	var runStart time.Time
	runOpt := lab.RunOptions{
		Scale:     scale,
		Recorder:  labdb.Recorder{Store: st},
		TruthFile: filepath.Join(opt.Dir, "truth.json"),
		Log:       log,
		Up:        func(context.Context) (*lab.Lab, error) { return l, nil },
		OnEvent: func(e lab.Event, wall time.Time, story *time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if runStart.IsZero() {
				runStart = wall
			}
			last = e.String()
			if story != nil {
				last = story.Format("2006-01-02 15:04") + " " + last
			}
		},
	}
	var total time.Duration
	if n := len(opt.Scenario.Events); n > 0 {
		total = opt.Scenario.Events[n-1].At
	}
	pctx, stopProgress := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	if opt.Progress != nil {
		pwg.Go(func() {
			t := time.NewTicker(500 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-pctx.Done():
					return
				case <-t.C:
				}
				mu.Lock()
				p := Progress{Event: last}
				rs := runStart
				mu.Unlock()
				if rs.IsZero() {
					continue
				}
				played := time.Duration(float64(time.Since(rs)) * scale)
				if !opt.Scenario.Start.IsZero() {
					p.Story = opt.Scenario.Start.Add(played)
				}
				if total > 0 {
					p.Done = min(1, float64(played)/float64(total))
				}
				p.Country = currentState(pctx, st, country)
				opt.Progress(p)
			}
		})
	}
	run, err := lab.Run(ctx, l, opt.Scenario, runOpt)
	stopProgress()
	pwg.Wait()
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}

	// Let the probers observe the end, then stop everything and make the
	// correlator's last pass over all of it.
	if err := sleep(ctx, 4*opt.Round+time.Second); err != nil {
		return nil, err
	}
	stopAll()
	for _, p := range procs {
		if p.err != nil && !p.signalled {
			log.Warn("process ended badly", "name", p.name, "err", p.err, "log", p.logPath)
		}
	}
	final, err := start(ctx, exec.CommandContext(ctx, opt.Exe, "correlate", "--db", opt.DB), opt, "correlate-final")
	if err != nil {
		return nil, err
	}
	if err := final.wait(); err != nil {
		return nil, fmt.Errorf("replay: final correlation: %w (see %s)", err, final.logPath)
	}
	return score(ctx, st, l, run, scale, opt.Round)
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// currentState reads the country's current state from the correlator.
func currentState(ctx context.Context, st *store.Store, country string) string {
	var s string
	var up, down, meas int
	err := st.Pool().QueryRow(ctx, `SELECT state, blocks_up, blocks_down, blocks_measurable FROM country_intervals
		WHERE country = $1 ORDER BY lower(during) DESC LIMIT 1`, country).Scan(&s, &up, &down, &meas)
	if err != nil {
		return "no data yet"
	}
	return fmt.Sprintf("%s (%d of %d blocks up)", s, up, meas)
}

// proc is one child process of the replay.
type proc struct {
	name, logPath string
	cmd           *exec.Cmd
	done          chan struct{}
	err           error
	signalled     bool
	once          sync.Once
}

func start(ctx context.Context, cmd *exec.Cmd, opt Options, name string) (*proc, error) {
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), logPath: filepath.Join(opt.Dir, name+".log")}
	f, err := os.Create(p.logPath)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), opt.Env...)
	// Stopped by us with SIGTERM (a clean stop), not killed with ctx.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("replay: start %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) wait() error {
	<-p.done
	return p.err
}

// stop ends the process with SIGTERM (it flushes and exits), or SIGKILL
// after the grace period.
func (p *proc) stop(grace time.Duration) {
	p.once.Do(func() {
		if p.exited() {
			return
		}
		p.signalled = true
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// score compares the derived history with the truth.
func score(ctx context.Context, st *store.Store, l *lab.Lab, run *lab.RunResult, scale float64, round time.Duration) (*Result, error) {
	country := l.Country().Code
	r := &Result{RunID: run.RunID, Scenario: run.Scenario, Country: country, Scale: scale, Round: round}
	origin := run.StartedAt
	story := origin
	if run.StoryStart != nil {
		story = *run.StoryStart
	}
	r.Story = func(t time.Time) time.Time {
		return story.Add(time.Duration(float64(t.Sub(origin)) * scale)).UTC()
	}
	win := func(a, b time.Time) Window {
		return Window{Start: a, End: b, StoryStart: r.Story(a), StoryEnd: r.Story(b)}
	}
	end := time.Now()
	if run.EndedAt != nil {
		end = *run.EndedAt
	}
	r.Period = win(origin, end)

	type span struct {
		a, b     time.Time
		vantages int
	}
	read := func(sql string, args ...any) ([]span, error) {
		rows, err := st.Pool().Query(ctx, sql, args...)
		if err != nil {
			return nil, err
		}
		var out []span
		var s span
		var b *time.Time
		_, err = pgx.ForEachRow(rows, []any{&s.a, &b, &s.vantages}, func() error {
			s.b = end
			if b != nil {
				s.b = *b
			}
			out = append(out, s)
			return nil
		})
		return out, err
	}
	derived, err := read(`SELECT started_at, ended_at, vantages FROM country_outages
		WHERE country = $1 AND coalesce(ended_at, 'infinity') > $2 ORDER BY started_at`, country, origin)
	if err != nil {
		return nil, fmt.Errorf("replay: read outages: %w", err)
	}
	overlaps := func(a1, b1, a2, b2 time.Time) bool { return a1.Before(b2) && a2.Before(b1) }
	used := make([]bool, len(derived))
	for _, f := range run.Faults {
		if f.EndedAt == nil {
			continue
		}
		w := win(f.StartedAt, *f.EndedAt)
		switch {
		case f.Target == "border" && f.Fault == "cut":
			m := Match{Truth: w}
			for i, d := range derived {
				if !used[i] && overlaps(d.a, d.b, f.StartedAt, *f.EndedAt) {
					used[i] = true
					dw := win(d.a, d.b)
					m.Derived, m.Vantages = &dw, d.vantages
					m.StartErr = dw.StoryStart.Sub(w.StoryStart)
					m.EndErr = dw.StoryEnd.Sub(w.StoryEnd)
					break
				}
			}
			r.Matches = append(r.Matches, m)
		case strings.HasPrefix(f.Target, "vantage:"):
			vf := VantageFault{Vantage: strings.TrimPrefix(f.Target, "vantage:"), Window: w}
			for _, d := range derived {
				vf.CountryOutage = vf.CountryOutage || overlaps(d.a, d.b, f.StartedAt, *f.EndedAt)
			}
			var n int
			st.Pool().QueryRow(ctx, `SELECT count(*) FROM vantage_health WHERE vantage = $1 AND state = 'unhealthy'
				AND during && tstzrange($2, $3)`, vf.Vantage, f.StartedAt, *f.EndedAt).Scan(&n)
			vf.SetAside = n > 0
			r.VantageFaults = append(r.VantageFaults, vf)
		case strings.HasPrefix(f.Target, "net:") && len(f.Prefixes) == 1:
			nf := NetworkFault{Network: f.Prefixes[0], Fault: f.Fault, Window: w}
			nets, err := read(`SELECT started_at, ended_at, vantages FROM network_outages
				WHERE network = $1 AND started_at < $3 AND coalesce(ended_at, 'infinity') > $2`, f.Prefixes[0], f.StartedAt, *f.EndedAt)
			if err != nil {
				return nil, fmt.Errorf("replay: read network outages: %w", err)
			}
			nf.Outages = len(nets)
			for _, d := range derived {
				nf.CountryOutage = nf.CountryOutage || overlaps(d.a, d.b, f.StartedAt, *f.EndedAt)
			}
			r.Networks = append(r.Networks, nf)
		}
	}
	for i, d := range derived {
		if !used[i] {
			r.False = append(r.False, win(d.a, d.b))
		}
	}
	rows, err := st.Pool().Query(ctx, `SELECT vantage, lower(during), coalesce(upper(during), 'infinity'), reason FROM vantage_health
		WHERE state = 'unhealthy' AND during && tstzrange($1, $2) ORDER BY lower(during)`, origin, end)
	if err != nil {
		return nil, fmt.Errorf("replay: read vantage health: %w", err)
	}
	var h Health
	var a, b time.Time
	if _, err := pgx.ForEachRow(rows, []any{&h.Vantage, &a, &b, &h.Reason}, func() error {
		if b.After(end) {
			b = end
		}
		h.Window = win(a, b)
		r.Unhealthy = append(r.Unhealthy, h)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("replay: read vantage health: %w", err)
	}
	return r, nil
}
