package lab

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A scenario is a timeline of faults, one per line, at offsets in story
// time:
//
//	# December 2014 replay (excerpt)
//	start 2014-12-21T12:00:00Z   # optional story clock: lets events use @TIME
//	scale 1h=4s                  # optional compression (story=wall, or a factor)
//	+0s      up
//	+90s     cut border
//	@2014-12-22T16:15:00Z cut border
//	+28h     restore border
//	+200s    loss net1 20%
//	+300s    decay net2 over 60s
//	+10m     flap net1 every 10m for 2h
//	+400s    delay vp2 50ms            # needs sch_netem
//	+500s    restore all
//	+600s    end                       # optional: ends the run here
//
// Durations are Go durations with an optional leading day count ("1d4h").
// Events must be in time order. A flap cuts its target for the first half
// of every period and restores it for the second, for the given time.
// Directives (start, scale) come before the first event.

// Event is one line of a scenario (or one step of a flap).
type Event struct {
	Line   int
	At     time.Duration // story time since the scenario's start
	Op     string        // up, end, cut, restore, loss, delay, decay
	Target string        // a vantage, "border", a network (name or prefix); "all" for restore
	// Percent for loss; Dur for delay (latency) and decay (its length).
	Percent int
	Dur     time.Duration
	// Flap marks a cut or restore that is a step of a flap.
	Flap bool
}

func (e Event) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "+%s %s", fmtDur(e.At), e.Op)
	if e.Target != "" {
		b.WriteString(" " + e.Target)
	}
	switch e.Op {
	case "loss":
		fmt.Fprintf(&b, " %d%%", e.Percent)
	case "delay":
		b.WriteString(" " + fmtDur(e.Dur))
	case "decay":
		b.WriteString(" over " + fmtDur(e.Dur))
	}
	if e.Flap {
		b.WriteString(" (flap)")
	}
	return b.String()
}

// Scenario is a parsed scenario file.
type Scenario struct {
	Name string // the file's base name without extension
	File string
	// Start is the story clock's time at offset 0; zero when not set.
	Start time.Time
	// Scale is story seconds per wall second (1h=4s is 900); 1 when not
	// set.
	Scale  float64
	Events []Event
}

// maxFlapSteps bounds a flap's expansion so a typo ("every 1s for 1y")
// cannot make millions of events.
const maxFlapSteps = 10000

// LoadScenario reads and parses a scenario file.
func LoadScenario(path string) (*Scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	defer f.Close()
	return ParseScenario(path, f)
}

// ParseScenario parses a scenario; errors name the file and line
// ("file:12: ...") and every bad line is reported.
func ParseScenario(file string, r io.Reader) (*Scenario, error) {
	name := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	sc := &Scenario{Name: name, File: file, Scale: 1}
	var errs []error
	bad := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", file, line, fmt.Sprintf(format, args...)))
	}
	s := bufio.NewScanner(r)
	line := 0
	var last time.Duration
	seenEvent, seenStart, seenScale := false, false, false
	var flaps []Event
	for s.Scan() {
		line++
		text := s.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		f := strings.Fields(text)
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "start" || f[0] == "scale":
			if seenEvent {
				bad(line, "%s must come before the first event", f[0])
				continue
			}
			if len(f) != 2 {
				bad(line, "want '%s VALUE'", f[0])
				continue
			}
			if f[0] == "start" {
				t, err := time.Parse(time.RFC3339, f[1])
				if err != nil || seenStart {
					bad(line, "start %q: want one RFC 3339 time such as 2014-12-21T12:00:00Z", f[1])
					continue
				}
				sc.Start, seenStart = t, true
			} else {
				v, err := ParseScale(f[1])
				if err != nil || seenScale {
					bad(line, "scale %q: want one STORY=WALL such as 1h=4s, or a factor such as 900", f[1])
					continue
				}
				sc.Scale, seenScale = v, true
			}
		case strings.HasPrefix(f[0], "+") || strings.HasPrefix(f[0], "@"):
			seenEvent = true
			at, err := parseAt(f[0], sc.Start)
			if err != nil {
				bad(line, "%v", err)
				continue
			}
			if at < last {
				bad(line, "%s is before the previous event (+%s): keep events in time order", f[0], fmtDur(last))
				continue
			}
			last = at
			evs, err := parseEvent(line, at, f[1:])
			if err != nil {
				bad(line, "%v", err)
				continue
			}
			for _, e := range evs {
				if e.Flap {
					flaps = append(flaps, e)
				} else {
					sc.Events = append(sc.Events, e)
				}
			}
		default:
			bad(line, "unknown line %q: want an event (+OFFSET or @TIME, then what happens) or start/scale", f[0])
		}
	}
	if err := s.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", file, err))
	}
	if len(flaps) > maxFlapSteps {
		errs = append(errs, fmt.Errorf("%s: flaps expand to %d steps (at most %d)", file, len(flaps), maxFlapSteps))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(sc.Events) == 0 && len(flaps) == 0 {
		return nil, fmt.Errorf("%s: no events", file)
	}
	sc.Events = append(sc.Events, flaps...)
	slices.SortStableFunc(sc.Events, func(a, b Event) int { return cmp.Or(cmp.Compare(a.At, b.At), cmp.Compare(a.Line, b.Line)) })
	return sc, nil
}

var targetRe = regexp.MustCompile(`^[a-z][a-z0-9]{0,14}$`)

func parseEvent(line int, at time.Duration, f []string) ([]Event, error) {
	if len(f) == 0 {
		return nil, errors.New("missing event after the time")
	}
	e := Event{Line: line, At: at, Op: f[0]}
	args := f[1:]
	want := func(n int, usage string) error {
		if len(args) != n {
			return fmt.Errorf("want '%s'", usage)
		}
		if n > 0 {
			e.Target = args[0]
			if _, err := netip.ParsePrefix(e.Target); err != nil && !targetRe.MatchString(e.Target) {
				return fmt.Errorf("bad target %q: want border, a vantage or a network (name or prefix)", e.Target)
			}
		}
		return nil
	}
	switch e.Op {
	case "up", "end":
		if err := want(0, e.Op); err != nil {
			return nil, err
		}
	case "cut":
		if err := want(1, "cut TARGET"); err != nil {
			return nil, err
		}
		if e.Target == "all" {
			return nil, errors.New("cut all: name one target (border cuts the whole country)")
		}
	case "restore":
		if err := want(1, "restore TARGET|all"); err != nil {
			return nil, err
		}
	case "loss":
		if err := want(2, "loss TARGET N%"); err != nil {
			return nil, err
		}
		n, err := strconv.Atoi(strings.TrimSuffix(args[1], "%"))
		if err != nil || !strings.HasSuffix(args[1], "%") || n < 0 || n > 100 {
			return nil, fmt.Errorf("loss %q: want a percentage 0%%-100%%", args[1])
		}
		e.Percent = n
	case "delay":
		if err := want(2, "delay TARGET DURATION"); err != nil {
			return nil, err
		}
		d, err := parseDur(args[1])
		if err != nil {
			return nil, err
		}
		e.Dur = d
	case "decay":
		if err := want(3, "decay TARGET over DURATION"); err != nil {
			return nil, err
		}
		if args[1] != "over" {
			return nil, fmt.Errorf("want 'decay TARGET over DURATION', got %q for 'over'", args[1])
		}
		d, err := parseDur(args[2])
		if err != nil {
			return nil, err
		}
		e.Dur = d
	case "flap":
		if err := want(5, "flap TARGET every PERIOD for DURATION"); err != nil {
			return nil, err
		}
		if args[1] != "every" || args[3] != "for" {
			return nil, errors.New("want 'flap TARGET every PERIOD for DURATION'")
		}
		every, err := parseDur(args[2])
		if err != nil {
			return nil, err
		}
		total, err := parseDur(args[4])
		if err != nil {
			return nil, err
		}
		if every <= 0 || total < every {
			return nil, fmt.Errorf("flap every %s for %s: want a positive period no longer than the time", args[2], args[4])
		}
		if total/every > maxFlapSteps {
			return nil, fmt.Errorf("flap every %s for %s: at most %d periods", args[2], args[4], maxFlapSteps)
		}
		var out []Event
		for t := time.Duration(0); t+every <= total; t += every {
			out = append(out,
				Event{Line: line, At: at + t, Op: "cut", Target: e.Target, Flap: true},
				Event{Line: line, At: at + t + every/2, Op: "restore", Target: e.Target, Flap: true})
		}
		return out, nil
	default:
		return nil, fmt.Errorf("unknown event %q (want up, cut, restore, loss, delay, decay, flap or end)", e.Op)
	}
	if e.Target == "all" && e.Op != "restore" {
		return nil, fmt.Errorf("%s all: only restore takes all", e.Op)
	}
	return []Event{e}, nil
}

func parseAt(s string, start time.Time) (time.Duration, error) {
	if strings.HasPrefix(s, "@") {
		if start.IsZero() {
			return 0, fmt.Errorf("%s: an @TIME event needs a start line first", s)
		}
		t, err := time.Parse(time.RFC3339, s[1:])
		if err != nil {
			return 0, fmt.Errorf("%s: want @ and an RFC 3339 time", s)
		}
		if t.Before(start) {
			return 0, fmt.Errorf("%s is before the start (%s)", s, start.Format(time.RFC3339))
		}
		return t.Sub(start), nil
	}
	return parseDur(s[1:])
}

// parseDur parses a Go duration with an optional leading day count.
func parseDur(s string) (time.Duration, error) {
	rest, days := s, 0
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil {
			return 0, fmt.Errorf("duration %q: want e.g. 90s, 1h30m or 1d4h", s)
		}
		rest, days = s[i+1:], n
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil {
			return 0, fmt.Errorf("duration %q: want e.g. 90s, 1h30m or 1d4h", s)
		}
	}
	if d < 0 || days < 0 || days > 3650 {
		return 0, fmt.Errorf("duration %q: want a non-negative duration", s)
	}
	return time.Duration(days)*24*time.Hour + d, nil
}

func fmtDur(d time.Duration) string {
	if d >= 24*time.Hour {
		return fmt.Sprintf("%dd%s", d/(24*time.Hour), strings.TrimPrefix((d%(24*time.Hour)).String(), "0s"))
	}
	return d.String()
}

// ParseScale parses a time compression: "1h=4s" (an hour of story in four
// seconds: 900) or a plain factor ("900").
func ParseScale(s string) (float64, error) {
	if story, wall, ok := strings.Cut(s, "="); ok {
		sd, err1 := parseDur(story)
		wd, err2 := parseDur(wall)
		if err1 != nil || err2 != nil || sd <= 0 || wd <= 0 {
			return 0, fmt.Errorf("scale %q: want STORY=WALL such as 1h=4s", s)
		}
		return float64(sd) / float64(wd), nil
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "x"), 64)
	if err != nil || v <= 0 || v > 1e9 {
		return 0, fmt.Errorf("scale %q: want a positive factor such as 900, or STORY=WALL such as 1h=4s", s)
	}
	return v, nil
}

// Check reports events whose targets the lab cfg does not have, naming
// the file and line, and delays where netem is known to be missing
// (netem false).
func (sc *Scenario) Check(cfg Config) error {
	p, err := newPlan(cfg)
	if err != nil {
		return fmt.Errorf("lab config: %w", err)
	}
	var errs []error
	for _, e := range sc.Events {
		if e.Target == "" || e.Target == "all" {
			continue
		}
		k, err := p.target(e.Target)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %v", sc.File, e.Line, err))
			continue
		}
		if e.Op == "decay" && k.down.kind != kindNetwork {
			errs = append(errs, fmt.Errorf("%s:%d: decay %s: only a network's hosts can decay", sc.File, e.Line, e.Target))
		}
	}
	return errors.Join(errs...)
}

// End is the story offset of the scenario's last event.
func (sc *Scenario) End() time.Duration {
	if len(sc.Events) == 0 {
		return 0
	}
	return sc.Events[len(sc.Events)-1].At
}
