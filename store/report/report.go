// Package report reads a period of derived history (country, network and
// vantage-health intervals) and renders it for people (text, Markdown, a
// self-contained HTML page with an SVG timeline) and for machines (JSON
// with a versioned schema, CSV with one row per interval).
//
// Data enter as intervals from the store; Build clips them to the period
// and summarises them; the Write* functions render the result.
package report

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// SchemaVersion is the version of the JSON output. It changes only when a
// field changes meaning or goes away; new fields may appear within one
// version.
const SchemaVersion = 1

// ErrNoData is returned for a country cutoff does not watch.
var ErrNoData = errors.New("no such country")

// Options select what to report.
type Options struct {
	Countries []string // empty with All: every watched country
	All       bool
	Since     time.Time
	Until     time.Time // zero: now
	// Now is the time of the report (injected for tests); zero: time.Now.
	Now time.Time
}

// Span is a time with its uncertainty: the truth lies in [Earliest, Latest].
type Span struct {
	At       time.Time `json:"at"`
	Earliest time.Time `json:"earliest"`
	Latest   time.Time `json:"latest"`
}

// Uncertainty is half the bracket's width.
func (s Span) Uncertainty() time.Duration { return s.Latest.Sub(s.Earliest) / 2 }

// Interval is one stretch of one state, clipped to the period.
type Interval struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	State string    `json:"state"`
	// Open is true for the current state, whose end is the report's end.
	Open bool `json:"open"`
}

// Outage is a down interval of a country or network.
type Outage struct {
	Start Span  `json:"start"`
	End   *Span `json:"end"` // nil while ongoing
	// Duration within the report's period (ongoing: until the report).
	Duration time.Duration `json:"duration_ns"`
	Ongoing  bool          `json:"ongoing"`
	// Scope is "country" when every network was down, else "networks".
	Scope       string   `json:"scope"`
	Networks    []string `json:"networks"` // networks down during the outage
	Vantages    int      `json:"vantages"`
	BlocksTotal int      `json:"blocks_total"`
	BlocksDown  int      `json:"blocks_down"`
}

// Summary sums up a country's or network's period.
type Summary struct {
	// Availability is the share of the measured time spent up; time in
	// unknown state is not measured.
	Availability float64       `json:"availability"`
	Measured     time.Duration `json:"measured_ns"`
	Up           time.Duration `json:"up_ns"`
	Partial      time.Duration `json:"partial_ns"`
	Down         time.Duration `json:"down_ns"`
	// Unknown is the time the state could not be judged (too few blocks
	// measurable): neither up nor down, and not in Measured.
	Unknown time.Duration `json:"unknown_ns"`
	Outages int           `json:"outages"`
	Longest time.Duration `json:"longest_ns"`
	Ongoing bool          `json:"ongoing"`
}

// Network is one network's part of a report.
type Network struct {
	Prefix    string     `json:"prefix"`
	ASN       uint32     `json:"asn,omitempty"`
	Blocks    int        `json:"blocks"`
	Summary   Summary    `json:"summary"`
	Outages   []Outage   `json:"outages"`
	Intervals []Interval `json:"intervals"`
}

// Country is one country's part of a report.
type Country struct {
	Code      string     `json:"code"`
	Name      string     `json:"name"`
	Blocks    int        `json:"blocks"`
	Summary   Summary    `json:"summary"`
	Outages   []Outage   `json:"outages"`
	Intervals []Interval `json:"intervals"`
	Networks  []Network  `json:"networks"`
}

// Vantage is one vantage's health in the period.
type Vantage struct {
	Name      string        `json:"name"`
	LastSeen  *time.Time    `json:"last_seen"`
	Unhealthy time.Duration `json:"unhealthy_ns"`
	Periods   []Health      `json:"unhealthy_periods"`
	Intervals []Interval    `json:"intervals"`
}

// Health is one unhealthy period of a vantage.
type Health struct {
	Start  time.Time  `json:"start"`
	End    *time.Time `json:"end"`
	Reason string     `json:"reason"`
}

// Report is everything rendered.
type Report struct {
	Version   int       `json:"version"`
	Generated time.Time `json:"generated"`
	Since     time.Time `json:"since"`
	Until     time.Time `json:"until"`
	// Horizon is the latest evidence the correlator has folded in: what
	// the report says holds as of then.
	Horizon   *time.Time `json:"horizon"`
	Countries []Country  `json:"countries"`
	Vantages  []Vantage  `json:"vantages"`
}

// Ongoing reports whether any country or network is down now.
func (r *Report) Ongoing() bool {
	for _, c := range r.Countries {
		if c.Summary.Ongoing {
			return true
		}
		for _, n := range c.Networks {
			if n.Summary.Ongoing {
				return true
			}
		}
	}
	return false
}

// Build reads the period's history.
func Build(ctx context.Context, pool *pgxpool.Pool, opt Options) (*Report, error) {
	now := opt.Now
	if now.IsZero() {
		now = time.Now()
	}
	now = now.UTC()
	until := opt.Until
	if until.IsZero() || until.After(now) {
		until = now
	}
	since := opt.Since.UTC()
	if !since.Before(until) {
		return nil, fmt.Errorf("report: the period is empty (%s to %s)", since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	r := &Report{Version: SchemaVersion, Generated: now, Since: since, Until: until.UTC(), Countries: []Country{}, Vantages: []Vantage{}}

	var horizon pgtype.Timestamptz
	if err := pool.QueryRow(ctx, `SELECT horizon FROM correlator_state`).Scan(&horizon); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("report: %w", err)
	}
	if horizon.Valid {
		h := horizon.Time.UTC()
		r.Horizon = &h
	}

	codes := opt.Countries
	if opt.All || len(codes) == 0 {
		rows, err := pool.Query(ctx, `SELECT code FROM countries ORDER BY code`)
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		codes, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
	}
	// Name every country asked for that is not watched, not just the
	// first: a cron line with a typo should be fixed in one go.
	var missing []string
	if err := pool.QueryRow(ctx, `SELECT coalesce(array_agg(c ORDER BY i), '{}') FROM unnest($1::text[]) WITH ORDINALITY AS a(c, i)
		WHERE NOT EXISTS (SELECT 1 FROM countries WHERE code = c)`, codes).Scan(&missing); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	switch len(missing) {
	case 0:
	case 1:
		return nil, fmt.Errorf("report: %w: %s is not watched (import it with cutoff targets import)", ErrNoData, missing[0])
	default:
		return nil, fmt.Errorf("report: %w: %s are not watched (import them with cutoff targets import)", ErrNoData, strings.Join(missing, ", "))
	}
	for _, cc := range codes {
		c, err := buildCountry(ctx, pool, cc, since, r.Until)
		if err != nil {
			return nil, err
		}
		r.Countries = append(r.Countries, *c)
	}
	vs, err := buildVantages(ctx, pool, since, r.Until)
	if err != nil {
		return nil, err
	}
	r.Vantages = vs
	return r, nil
}

type row struct {
	key            string
	lo, hi         time.Time
	open           bool
	state          string
	se, sl, ee, el pgtype.Timestamptz
	vantages       int
	total, down    int
	reason         string
}

// fetch reads the intervals of one table overlapping the period.
func fetch(ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) ([]row, error) {
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	var out []row
	var r row
	var hi pgtype.Timestamptz
	_, err = pgx.ForEachRow(rows, []any{&r.key, &r.lo, &hi, &r.state, &r.se, &r.sl, &r.ee, &r.el, &r.vantages, &r.total, &r.down, &r.reason}, func() error {
		r.open = !hi.Valid
		r.hi = hi.Time
		out = append(out, r)
		return nil
	})
	return out, err
}

const intervalCols = `lower(during), upper(during), state, start_earliest, start_latest, end_earliest, end_latest`

func buildCountry(ctx context.Context, pool *pgxpool.Pool, cc string, since, until time.Time) (*Country, error) {
	c := &Country{Code: cc, Outages: []Outage{}, Intervals: []Interval{}, Networks: []Network{}}
	err := pool.QueryRow(ctx, `SELECT name, (SELECT count(*) FROM blocks WHERE country = $1) FROM countries WHERE code = $1`, cc).Scan(&c.Name, &c.Blocks)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("report: %w: %s is not watched (import it with cutoff targets import)", ErrNoData, cc)
	}
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", cc, err)
	}
	rng := []any{cc, since, until}
	crows, err := fetch(ctx, pool, `SELECT country, `+intervalCols+`, vantages, blocks_total, blocks_down, ''
		FROM country_intervals WHERE country = $1 AND during && tstzrange($2, $3) ORDER BY lower(during)`, rng...)
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", cc, err)
	}
	nrows, err := fetch(ctx, pool, `SELECT network::text, `+intervalCols+`, vantages, blocks_total, blocks_down, ''
		FROM network_intervals WHERE country = $1 AND during && tstzrange($2, $3) ORDER BY network, lower(during)`, rng...)
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", cc, err)
	}
	// Every network of the country, measured or not.
	prows, err := pool.Query(ctx, `SELECT p.prefix::text, coalesce(p.asn, 0), (SELECT count(*) FROM blocks b WHERE b.prefix = p.prefix)
		FROM prefixes p WHERE p.country = $1 AND family(p.prefix) = 4 ORDER BY p.prefix`, cc)
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", cc, err)
	}
	byNet := map[string][]row{}
	for _, r := range nrows {
		byNet[r.key] = append(byNet[r.key], r)
	}
	var prefix string
	var asn int64
	var blocks int
	if _, err := pgx.ForEachRow(prows, []any{&prefix, &asn, &blocks}, func() error {
		n := Network{Prefix: prefix, ASN: uint32(asn), Blocks: blocks}
		n.Intervals, n.Summary = summarise(byNet[prefix], since, until)
		n.Outages = outages(byNet[prefix], since, until, nil)
		for i := range n.Outages {
			n.Outages[i].Scope = "network"
			n.Outages[i].Networks = []string{prefix}
		}
		c.Networks = append(c.Networks, n)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("report %s: %w", cc, err)
	}
	c.Intervals, c.Summary = summarise(crows, since, until)
	c.Outages = outages(crows, since, until, c.Networks)
	return c, nil
}

// clip limits an interval to the period; ok is false when nothing is left.
func clip(r row, since, until time.Time) (Interval, bool) {
	start, end := r.lo, r.hi
	if r.open || end.After(until) {
		end = until
	}
	if start.Before(since) {
		start = since
	}
	if !start.Before(end) {
		return Interval{}, false
	}
	return Interval{Start: start.UTC(), End: end.UTC(), State: r.state, Open: r.open && !r.lo.After(until)}, true
}

func summarise(rows []row, since, until time.Time) ([]Interval, Summary) {
	ivs := []Interval{}
	var s Summary
	for _, r := range rows {
		iv, ok := clip(r, since, until)
		if !ok {
			continue
		}
		ivs = append(ivs, iv)
		d := iv.End.Sub(iv.Start)
		switch iv.State {
		case "up":
			s.Up += d
		case "partial":
			s.Partial += d
		case "down":
			s.Down += d
			s.Outages++
			s.Longest = max(s.Longest, d)
			s.Ongoing = s.Ongoing || iv.Open
		case "unknown":
			s.Unknown += d
		}
	}
	s.Measured = s.Up + s.Partial + s.Down
	if s.Measured > 0 {
		s.Availability = float64(s.Up) / float64(s.Measured)
	}
	return ivs, s
}

func span(at time.Time, e, l pgtype.Timestamptz) Span {
	s := Span{At: at.UTC(), Earliest: at.UTC(), Latest: at.UTC()}
	if e.Valid && l.Valid {
		s.Earliest, s.Latest = e.Time.UTC(), l.Time.UTC()
	}
	return s
}

// outages lists the down intervals overlapping the period; for a country,
// with the networks that were down during each.
func outages(rows []row, since, until time.Time, nets []Network) []Outage {
	out := []Outage{}
	for _, r := range rows {
		if r.state != "down" {
			continue
		}
		iv, ok := clip(r, since, until)
		if !ok {
			continue
		}
		o := Outage{Start: span(r.lo, r.se, r.sl), Duration: iv.End.Sub(iv.Start), Ongoing: r.open,
			Vantages: r.vantages, BlocksTotal: r.total, BlocksDown: r.down, Scope: "country", Networks: []string{}}
		if !r.open {
			e := span(r.hi, r.ee, r.el)
			o.End = &e
		}
		if nets != nil {
			for _, n := range nets {
				for _, ni := range n.Intervals {
					if ni.State == "down" && ni.Start.Before(iv.End) && iv.Start.Before(ni.End) {
						o.Networks = append(o.Networks, n.Prefix)
						break
					}
				}
			}
			if len(o.Networks) < len(nets) {
				o.Scope = "networks"
			}
		}
		out = append(out, o)
	}
	return out
}

func buildVantages(ctx context.Context, pool *pgxpool.Pool, since, until time.Time) ([]Vantage, error) {
	rows, err := fetch(ctx, pool, `SELECT vantage, `+intervalCols+`, 0, 0, 0, reason
		FROM vantage_health WHERE during && tstzrange($1, $2) ORDER BY vantage, lower(during)`, since, until)
	if err != nil {
		return nil, fmt.Errorf("report vantages: %w", err)
	}
	seen := map[string]*Vantage{}
	var order []string
	vrows, err := pool.Query(ctx, `SELECT name, last_seen FROM vantages ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("report vantages: %w", err)
	}
	var name string
	var last time.Time
	if _, err := pgx.ForEachRow(vrows, []any{&name, &last}, func() error {
		l := last.UTC()
		seen[name] = &Vantage{Name: name, LastSeen: &l, Periods: []Health{}, Intervals: []Interval{}}
		order = append(order, name)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("report vantages: %w", err)
	}
	for _, r := range rows {
		v := seen[r.key]
		if v == nil {
			v = &Vantage{Name: r.key, Periods: []Health{}, Intervals: []Interval{}}
			seen[r.key] = v
			order = append(order, r.key)
		}
		iv, ok := clip(r, since, until)
		if !ok {
			continue
		}
		v.Intervals = append(v.Intervals, iv)
		if r.state == "unhealthy" {
			h := Health{Start: r.lo.UTC(), Reason: r.reason}
			if !r.open {
				e := r.hi.UTC()
				h.End = &e
			}
			v.Periods = append(v.Periods, h)
			v.Unhealthy += iv.End.Sub(iv.Start)
		}
	}
	sort.Strings(order)
	out := []Vantage{}
	for _, n := range order {
		out = append(out, *seen[n])
	}
	return out, nil
}

// ParsePeriod reads --since and --until values: a duration back from now
// ("24h", "7d"), a date (2014-12-22) or an RFC 3339 time.
func ParsePeriod(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if strings.HasSuffix(s, "d") {
		var days int
		if _, err := fmt.Sscanf(s, "%dd", &days); err == nil && fmt.Sprintf("%dd", days) == s && days > 0 {
			return now.Add(-time.Duration(days) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02 15:04", time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a duration (24h, 7d), date (2014-12-22) or time (2014-12-22T16:15:00Z)", s)
}

// Warp re-expresses the report on another clock: every time t becomes
// f(t) and every duration is multiplied by scale. The lab's replays run
// history compressed (an hour in four seconds) and report it on the clock
// of the story they replay.
func (r *Report) Warp(f func(time.Time) time.Time, scale float64) {
	d := func(x time.Duration) time.Duration { return time.Duration(float64(x) * scale) }
	tp := func(t *time.Time) {
		if t != nil {
			*t = f(*t)
		}
	}
	span := func(s *Span) {
		if s != nil {
			s.At, s.Earliest, s.Latest = f(s.At), f(s.Earliest), f(s.Latest)
		}
	}
	ivs := func(xs []Interval) {
		for i := range xs {
			xs[i].Start, xs[i].End = f(xs[i].Start), f(xs[i].End)
		}
	}
	sum := func(s *Summary) {
		s.Measured, s.Up, s.Partial, s.Down, s.Longest = d(s.Measured), d(s.Up), d(s.Partial), d(s.Down), d(s.Longest)
	}
	outs := func(os []Outage) {
		for i := range os {
			span(&os[i].Start)
			span(os[i].End)
			os[i].Duration = d(os[i].Duration)
		}
	}
	r.Generated, r.Since, r.Until = f(r.Generated), f(r.Since), f(r.Until)
	tp(r.Horizon)
	for i := range r.Countries {
		c := &r.Countries[i]
		sum(&c.Summary)
		outs(c.Outages)
		ivs(c.Intervals)
		for j := range c.Networks {
			n := &c.Networks[j]
			sum(&n.Summary)
			outs(n.Outages)
			ivs(n.Intervals)
		}
	}
	for i := range r.Vantages {
		v := &r.Vantages[i]
		tp(v.LastSeen)
		v.Unhealthy = d(v.Unhealthy)
		ivs(v.Intervals)
		for j := range v.Periods {
			v.Periods[j].Start = f(v.Periods[j].Start)
			tp(v.Periods[j].End)
		}
	}
}
