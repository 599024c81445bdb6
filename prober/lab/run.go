package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Truth is one fault as it really happened during a scenario run: what,
// on which target, from when to when by the wall clock (and by the story
// clock when the scenario has one). It is what the correlator's output is
// scored against.
type Truth struct {
	RunID    string `json:"run_id"`
	Seq      int    `json:"seq"` // unique within the run
	Scenario string `json:"scenario"`
	Country  string `json:"country,omitempty"`
	// Target is "border", "net:198.19.1.0/24" or "vantage:vp1".
	Target string `json:"target"`
	// Fault is cut, loss, delay, decay, or flap (one down phase of a
	// flap).
	Fault  string `json:"fault"`
	Detail string `json:"detail,omitempty"`
	// Prefixes is the country's address space the fault affects (empty
	// for a vantage's uplink).
	Prefixes []netip.Prefix `json:"prefixes"`
	Line     int            `json:"line"` // in the scenario file
	// StartedAt is when the fault took effect; EndedAt when it was
	// restored (nil while active). DoneAt, for a decay, is when its last
	// host went silent.
	StartedAt  time.Time  `json:"started_at"`
	EndedAt    *time.Time `json:"ended_at"`
	DoneAt     *time.Time `json:"done_at,omitempty"`
	StoryStart *time.Time `json:"story_start,omitempty"`
	StoryEnd   *time.Time `json:"story_end,omitempty"`
}

// Recorder stores ground truth as it happens. Record is called when a
// fault takes effect and again when it changes (decay done) or ends; the
// pair (RunID, Seq) identifies the fault.
type Recorder interface {
	Record(ctx context.Context, t Truth) error
}

// RunOptions tune Run. The zero value plays the scenario as written on the
// given lab.
type RunOptions struct {
	// Scale overrides the scenario's time compression when > 0.
	Scale float64
	// Up handles the scenario's "up" event; by default it runs Up with
	// the lab's config (or fails when Run was given no lab).
	Up func(ctx context.Context) (*Lab, error)
	// Recorder, when set, stores the truth (e.g. in lab_truth).
	Recorder Recorder
	// TruthFile, when set, is rewritten with the run's truth as JSON after
	// every change.
	TruthFile string
	// KeepFaults leaves faults still active at the end in place (and
	// their truth open) instead of restoring them.
	KeepFaults bool
	// RunID names the run; by default "<scenario>-<random hex>".
	RunID string
	// OnEvent, when set, is called as each event is applied.
	OnEvent func(e Event, wall time.Time, story *time.Time)
	Log     *slog.Logger
	// Now is the wall clock (default time.Now).
	Now func() time.Time
}

// Run is the outcome of a scenario run.
type RunResult struct {
	RunID      string     `json:"run_id"`
	Scenario   string     `json:"scenario"`
	File       string     `json:"file"`
	Scale      float64    `json:"scale"`
	StoryStart *time.Time `json:"story_start,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	EndedAt    *time.Time `json:"ended_at"`
	Faults     []Truth    `json:"faults"`
}

// Run plays the scenario on l (nil if the scenario starts with "up" and
// RunOptions.Up brings the lab up), applying each event at its offset
// divided by the scale, and records the ground truth. When the scenario
// ends (its last event, or "end") faults still active are restored and
// their truth closed, unless KeepFaults. On error or cancellation it
// restores likewise and returns what it recorded so far with the error.
func Run(ctx context.Context, l *Lab, sc *Scenario, opt RunOptions) (*RunResult, error) {
	r := &runner{l: l, sc: sc, opt: opt, open: map[openKey]int{}, decays: map[string]chan struct{}{}}
	if r.opt.Now == nil {
		r.opt.Now = time.Now
	}
	// PostgreSQL keeps microseconds: record exactly what it will store,
	// so the JSON file and lab_truth agree.
	clock := r.opt.Now
	r.opt.Now = func() time.Time { return clock().UTC().Truncate(time.Microsecond) }
	if r.opt.Log == nil {
		r.opt.Log = slog.New(slog.DiscardHandler)
	}
	r.scale = sc.Scale
	if opt.Scale > 0 {
		r.scale = opt.Scale
	}
	if r.scale <= 0 {
		r.scale = 1
	}
	if r.opt.RunID == "" {
		var b [4]byte
		rand.Read(b[:])
		r.opt.RunID = sc.Name + "-" + hex.EncodeToString(b[:])
	}
	if l == nil && (len(sc.Events) == 0 || sc.Events[0].Op != "up") {
		return nil, fmt.Errorf("%s: the lab is not up and the scenario does not start with up", sc.File)
	}
	if l == nil && opt.Up == nil {
		return nil, fmt.Errorf("%s: no lab given and no RunOptions.Up to bring one up", sc.File)
	}
	if l != nil {
		if err := sc.Check(l.Config()); err != nil {
			return nil, err
		}
	}
	r.res = &RunResult{RunID: r.opt.RunID, Scenario: sc.Name, File: sc.File, Scale: r.scale, Faults: []Truth{}}
	r.t0 = r.opt.Now()
	r.res.StartedAt = r.t0
	if !sc.Start.IsZero() {
		s := sc.Start
		r.res.StoryStart = &s
	}
	if l != nil {
		if err := r.checkNetem(); err != nil {
			return nil, err
		}
	}
	ended, err := r.play(ctx)
	if err == nil && !ended {
		// The scenario lasts until its last decay has played out.
		r.wg.Wait()
	}
	// Close what is still open, even after an error or cancellation.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if !opt.KeepFaults && r.l != nil {
		if rerr := r.restoreAll(fctx); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}
	r.wg.Wait()
	if r.owned != nil {
		r.owned.Close()
	}
	end := r.opt.Now()
	r.res.EndedAt = &end
	if werr := r.writeFile(); werr != nil {
		err = errors.Join(err, werr)
	}
	return r.res, err
}

type openKey struct{ target, fault string }

type runner struct {
	l     *Lab
	owned *Lab // a Lab the runner opened itself, closed at the end
	sc    *Scenario
	opt   RunOptions
	scale float64
	t0    time.Time
	res   *RunResult

	fileMu sync.Mutex // serialises writes of the truth file
	mu     sync.Mutex
	open   map[openKey]int // index into res.Faults of open faults
	decays map[string]chan struct{}
	wg     sync.WaitGroup
}

func (r *runner) wall(story time.Duration) time.Time {
	return r.t0.Add(time.Duration(float64(story) / r.scale))
}

func (r *runner) story(wall time.Time) *time.Time {
	if r.sc.Start.IsZero() {
		return nil
	}
	s := r.sc.Start.Add(time.Duration(float64(wall.Sub(r.t0)) * r.scale)).UTC().Truncate(time.Microsecond)
	return &s
}

// checkNetem fails early, naming the line, when the scenario asks for a
// delay the kernel cannot emulate.
func (r *runner) checkNetem() error {
	for _, e := range r.sc.Events {
		if e.Op == "delay" && !r.l.NetemAvailable() {
			return fmt.Errorf("%s:%d: %w", r.sc.File, e.Line, ErrNoNetem)
		}
	}
	return nil
}

// play applies the events in time; ended reports an explicit "end".
func (r *runner) play(ctx context.Context) (ended bool, err error) {
	for _, e := range r.sc.Events {
		if d := r.wall(e.At).Sub(r.opt.Now()); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return false, ctx.Err()
			case <-t.C:
			}
		}
		now := r.opt.Now()
		r.opt.Log.Debug("scenario event", "line", e.Line, "event", e.String())
		if r.opt.OnEvent != nil {
			r.opt.OnEvent(e, now, r.story(now))
		}
		if e.Op == "end" {
			return true, nil
		}
		if err := r.apply(ctx, e); err != nil {
			return false, fmt.Errorf("%s:%d: %s: %w", r.sc.File, e.Line, e, err)
		}
	}
	return false, nil
}

func (r *runner) apply(ctx context.Context, e Event) error {
	if e.Op == "up" {
		// Up repairs the lab, ending every fault.
		r.stopDecays()
		var l *Lab
		var err error
		if r.opt.Up != nil {
			l, err = r.opt.Up(ctx)
		} else {
			if l, err = Up(ctx, r.l.Config()); err == nil {
				if r.owned != nil {
					r.owned.Close()
				}
				r.owned = l // only its handles: the lab stays up
			}
		}
		if err != nil {
			return err
		}
		if err := r.sc.Check(l.Config()); err != nil {
			return err
		}
		r.l = l
		if err := r.checkNetem(); err != nil {
			return err
		}
		return r.closeAll(ctx, "")
	}
	k, err := r.l.plan.target(e.Target)
	if e.Target != "all" && err != nil {
		return err
	}
	switch e.Op {
	case "cut":
		fault := "cut"
		if e.Flap {
			fault = "flap"
		}
		if r.isOpen(k.truthName, "cut") || r.isOpen(k.truthName, "flap") {
			return nil // already cut: the first cut's truth stands
		}
		if err := r.l.Cut(ctx, e.Target); err != nil {
			return err
		}
		return r.begin(ctx, e, k, fault, "")
	case "restore":
		if e.Target == "all" {
			r.stopDecays()
		} else {
			r.stopDecay(k.truthName)
		}
		if err := r.l.Restore(ctx, e.Target); err != nil {
			return err
		}
		if e.Target == "all" {
			return r.closeAll(ctx, "")
		}
		return r.closeAll(ctx, k.truthName)
	case "loss":
		if err := r.l.Loss(ctx, e.Target, e.Percent); err != nil {
			return err
		}
		if err := r.end(ctx, openKey{k.truthName, "loss"}); err != nil {
			return err
		}
		if e.Percent == 0 {
			return nil
		}
		return r.begin(ctx, e, k, "loss", fmt.Sprintf("%d%%", e.Percent))
	case "delay":
		// Latency is a property of the link, not of the story: not scaled.
		if err := r.l.Delay(ctx, e.Target, e.Dur); err != nil {
			return err
		}
		if err := r.end(ctx, openKey{k.truthName, "delay"}); err != nil {
			return err
		}
		if e.Dur == 0 {
			return nil
		}
		return r.begin(ctx, e, k, "delay", e.Dur.String())
	case "decay":
		if r.isOpen(k.truthName, "decay") {
			return nil
		}
		hosts := len(r.l.plan.hosts[k.down.network])
		if err := r.begin(ctx, e, k, "decay", fmt.Sprintf("%d hosts over %s", hosts, fmtDur(e.Dur))); err != nil {
			return err
		}
		r.startDecay(ctx, e, k)
		return nil
	}
	return fmt.Errorf("unknown event %q", e.Op)
}

// startDecay runs the decay in the background, in wall time, and marks
// its truth done when the last host has gone.
func (r *runner) startDecay(ctx context.Context, e Event, k *link) {
	dctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	r.mu.Lock()
	r.decays[k.truthName] = stopped
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		go func() { <-stopped; cancel() }()
		err := r.l.Decay(dctx, e.Target, time.Duration(float64(e.Dur)/r.scale), nil)
		if err != nil || dctx.Err() != nil {
			if err != nil && !errors.Is(err, context.Canceled) {
				r.opt.Log.Error("decay", "target", e.Target, "err", err)
			}
			return
		}
		r.mu.Lock()
		i, ok := r.open[openKey{k.truthName, "decay"}]
		if ok {
			now := r.opt.Now()
			r.res.Faults[i].DoneAt = &now
		}
		var t Truth
		if ok {
			t = r.res.Faults[i]
		}
		r.mu.Unlock()
		if ok {
			if err := r.record(ctx, t); err != nil {
				r.opt.Log.Error("record decay", "err", err)
			}
		}
	}()
}

func (r *runner) stopDecay(truthName string) {
	r.mu.Lock()
	ch, ok := r.decays[truthName]
	delete(r.decays, truthName)
	r.mu.Unlock()
	if ok {
		close(ch)
	}
}

func (r *runner) stopDecays() {
	r.mu.Lock()
	names := make([]string, 0, len(r.decays))
	for n := range r.decays {
		names = append(names, n)
	}
	r.mu.Unlock()
	for _, n := range names {
		r.stopDecay(n)
	}
}

func (r *runner) isOpen(target, fault string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.open[openKey{target, fault}]
	return ok
}

func (r *runner) begin(ctx context.Context, e Event, k *link, fault, detail string) error {
	now := r.opt.Now()
	r.mu.Lock()
	t := Truth{RunID: r.opt.RunID, Seq: len(r.res.Faults) + 1, Scenario: r.sc.Name, Country: r.l.cfg.Country.Code,
		Target: k.truthName, Fault: fault, Detail: detail, Prefixes: append([]netip.Prefix{}, k.affected...),
		Line: e.Line, StartedAt: now, StoryStart: r.story(now)}
	r.res.Faults = append(r.res.Faults, t)
	r.open[openKey{k.truthName, fault}] = len(r.res.Faults) - 1
	r.mu.Unlock()
	return r.record(ctx, t)
}

// end closes one open fault's truth.
func (r *runner) end(ctx context.Context, key openKey) error {
	now := r.opt.Now()
	r.mu.Lock()
	i, ok := r.open[key]
	if !ok {
		r.mu.Unlock()
		return nil
	}
	delete(r.open, key)
	r.res.Faults[i].EndedAt = &now
	r.res.Faults[i].StoryEnd = r.story(now)
	t := r.res.Faults[i]
	r.mu.Unlock()
	return r.record(ctx, t)
}

// closeAll closes the open truth of one target, or of all ("").
func (r *runner) closeAll(ctx context.Context, target string) error {
	r.mu.Lock()
	var keys []openKey
	for k := range r.open {
		if target == "" || k.target == target {
			keys = append(keys, k)
		}
	}
	r.mu.Unlock()
	var errs []error
	for _, k := range keys {
		errs = append(errs, r.end(ctx, k))
	}
	return errors.Join(errs...)
}

func (r *runner) restoreAll(ctx context.Context) error {
	r.mu.Lock()
	n := len(r.open)
	r.mu.Unlock()
	r.stopDecays()
	if n == 0 {
		return nil
	}
	if err := r.l.Restore(ctx, "all"); err != nil {
		return err
	}
	return r.closeAll(ctx, "")
}

func (r *runner) record(ctx context.Context, t Truth) error {
	var errs []error
	if r.opt.Recorder != nil {
		if err := r.opt.Recorder.Record(ctx, t); err != nil {
			errs = append(errs, fmt.Errorf("record truth: %w", err))
		}
	}
	errs = append(errs, r.writeFile())
	return errors.Join(errs...)
}

func (r *runner) writeFile() error {
	if r.opt.TruthFile == "" {
		return nil
	}
	r.fileMu.Lock()
	defer r.fileMu.Unlock()
	r.mu.Lock()
	b, err := json.MarshalIndent(r.res, "", "  ")
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(r.opt.TruthFile, append(b, '\n')); err != nil {
		return fmt.Errorf("truth file: %w", err)
	}
	return nil
}
