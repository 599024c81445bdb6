// Package correlate turns what vantages saw into block, network and
// country up/down intervals, and vantage health intervals.
//
// Data enter through the observations table (each visit's verdict) and
// probe_results (control targets), found through ingest_log; derived
// intervals leave through block_intervals, network_intervals,
// country_intervals and vantage_health. A pass folds in everything
// ingested since the last pass, including results a vantage replays from
// its spool hours late, by recomputing the affected time window and
// writing only the rows that differ. Re-running over the same data
// changes nothing.
package correlate

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config tunes the correlator. The zero value works.
type Config struct {
	Mass MassFailure // zero: DefaultMassFailure
	// DefaultRound and DefaultTimeout stand in for a vantage that has not
	// reported its own (zero: 11 minutes and 5 seconds).
	DefaultRound, DefaultTimeout time.Duration
	Log                          *slog.Logger
	// Events, when set, receives each outage that starts or ends.
	Events func(Event)
	// KeepResults and KeepVerdicts, when set, bound how long raw probe
	// results and verdicts are kept: Follow drops older daily partitions
	// every hour. Verdicts should outlive results: recomputing needs them.
	KeepResults, KeepVerdicts time.Duration
}

// Event is a country or network outage starting or ending.
type Event struct {
	Kind    string // "outage_started" or "outage_ended"
	Scope   string // "country" or "network"
	Country string
	Network netip.Prefix // for networks
	Start   time.Time
	End     time.Time // zero while ongoing
	// Blocks counts at the start of the outage.
	BlocksTotal, BlocksDown int
}

// Correlator derives intervals in one database.
type Correlator struct {
	pool *pgxpool.Pool
	cfg  Config
	log  *slog.Logger
}

// New returns a correlator working on pool.
func New(pool *pgxpool.Pool, cfg Config) *Correlator {
	if cfg.Mass == (MassFailure{}) {
		cfg.Mass = DefaultMassFailure
	}
	if cfg.DefaultRound == 0 {
		cfg.DefaultRound = 11 * time.Minute
	}
	if cfg.DefaultTimeout == 0 {
		cfg.DefaultTimeout = 5 * time.Second
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Correlator{pool: pool, cfg: cfg, log: log}
}

// Stats describe one pass.
type Stats struct {
	Batches      int       // ingest_log lines folded in
	From         time.Time // start of the recomputed window
	Horizon      time.Time // latest evidence
	Observations int
	Controls     int
	Keys         int // blocks, networks, countries and vantages derived
	Inserted     int
	Deleted      int
	Elapsed      time.Duration
}

// Pass folds in everything ingested since the last pass. It returns
// zero Stats (Batches == 0) when there was nothing new.
func (c *Correlator) Pass(ctx context.Context) (Stats, error) {
	start := time.Now()
	var st Stats
	var events []Event
	err := pgx.BeginTxFunc(ctx, c.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		// One correlator writes at a time.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('cutoff correlate'))`); err != nil {
			return err
		}
		// Every transaction with an xid below the snapshot's xmin has
		// ended, so entries below it never appear later; entries above it
		// may, and those already seen are remembered.
		var watermark, safe pgtype.Text
		var seen []int64
		var oldHorizon pgtype.Timestamptz
		if err := tx.QueryRow(ctx, `SELECT watermark::text, seen, pg_snapshot_xmin(pg_current_snapshot())::text, horizon
			FROM correlator_state`).Scan(&watermark, &seen, &safe, &oldHorizon); err != nil {
			return fmt.Errorf("read watermark: %w", err)
		}
		var dirty, newest pgtype.Timestamptz
		if err := tx.QueryRow(ctx, `SELECT count(*), min(first_sent), max(last_sent) FROM ingest_log
			WHERE xid >= $1::xid8 AND id <> ALL($2)`,
			watermark.String, seen).Scan(&st.Batches, &dirty, &newest); err != nil {
			return fmt.Errorf("read ingest log: %w", err)
		}
		if st.Batches == 0 {
			return nil
		}
		horizon := newest.Time
		if oldHorizon.Valid && oldHorizon.Time.After(horizon) {
			horizon = oldHorizon.Time
		}
		from := dirty.Time
		if oldHorizon.Valid && oldHorizon.Time.Before(from) {
			// Blocks whose evidence ended just before the old horizon
			// go stale after it: look back far enough to see them.
			from = oldHorizon.Time
		}
		var err error
		events, err = c.recompute(ctx, tx, from, horizon, &st)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE correlator_state SET watermark = $1::xid8,
			seen = coalesce((SELECT array_agg(id ORDER BY id) FROM ingest_log WHERE xid >= $1::xid8), '{}'),
			horizon = $2, passes = passes + 1, updated_at = now()`,
			safe.String, horizon)
		return err
	})
	if err != nil {
		return Stats{}, fmt.Errorf("correlate: %w", err)
	}
	st.Elapsed = time.Since(start)
	if c.cfg.Events != nil {
		for _, e := range events {
			c.cfg.Events(e)
		}
	}
	return st, nil
}

// Recompute derives everything again from the given time on, whatever the
// watermark says (for a changed threshold or after repairing data).
func (c *Correlator) Recompute(ctx context.Context, from time.Time) (Stats, error) {
	start := time.Now()
	var st Stats
	err := pgx.BeginTxFunc(ctx, c.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('cutoff correlate'))`); err != nil {
			return err
		}
		var horizon pgtype.Timestamptz
		if err := tx.QueryRow(ctx, `SELECT max(last_sent) FROM ingest_log`).Scan(&horizon); err != nil {
			return err
		}
		if !horizon.Valid {
			return nil
		}
		_, err := c.recompute(ctx, tx, from, horizon.Time, &st)
		return err
	})
	if err != nil {
		return Stats{}, fmt.Errorf("correlate: %w", err)
	}
	st.Elapsed = time.Since(start)
	return st, nil
}

// Prune drops the partitions older than the configured retention.
func (c *Correlator) Prune(ctx context.Context, now time.Time) (results, verdicts int, err error) {
	for _, p := range []struct {
		table string
		keep  time.Duration
		n     *int
	}{{"probe_results", c.cfg.KeepResults, &results}, {"observations", c.cfg.KeepVerdicts, &verdicts}} {
		if p.keep <= 0 {
			continue
		}
		if err := c.pool.QueryRow(ctx, `SELECT cutoff_drop_partitions($1, $2)`, now.Add(-p.keep), p.table).Scan(p.n); err != nil {
			return results, verdicts, fmt.Errorf("prune %s: %w", p.table, err)
		}
	}
	return results, verdicts, nil
}

// Follow runs passes until ctx ends, every interval, so intervals follow
// new results within seconds; every hour it prunes old partitions.
func (c *Correlator) Follow(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var pruned time.Time
	for {
		if time.Since(pruned) > time.Hour {
			if r, v, err := c.Prune(ctx, time.Now()); err != nil {
				c.log.Warn("prune failed", "err", err)
			} else {
				pruned = time.Now()
				if r+v > 0 {
					c.log.Info("pruned old partitions", "results", r, "verdicts", v)
				}
			}
		}
		st, err := c.Pass(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			// A database outage must not end the correlator: log, retry.
			c.log.Warn("correlate pass failed", "err", err)
		case st.Batches > 0:
			c.log.Info("correlated", "batches", st.Batches, "from", st.From.Format(time.RFC3339), "horizon", st.Horizon.Format(time.RFC3339),
				"observations", st.Observations, "inserted", st.Inserted, "deleted", st.Deleted, "took", st.Elapsed.Round(time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// recompute derives the tracks for evidence after from (with enough
// history before it to know the state at from) and writes the intervals
// that differ from what is stored.
func (c *Correlator) recompute(ctx context.Context, tx pgx.Tx, from, horizon time.Time, st *Stats) ([]Event, error) {
	in, vantageNames, err := c.loadFrame(ctx, tx)
	if err != nil {
		return nil, err
	}
	lookback := int64(0)
	for _, v := range in.Vantages {
		lookback = max(lookback, v.Fresh)
	}
	k := micros(from) - lookback      // write from here
	load := micros(from) - 2*lookback // derive from here
	in.Horizon = micros(horizon)
	st.From, st.Horizon = fromMicros(k), horizon

	vIdx := map[string]int{}
	for i, n := range vantageNames {
		vIdx[n] = i
	}
	bIdx := map[netip.Prefix]int{}
	for i, b := range in.Blocks {
		bIdx[b.Prefix] = i
	}
	vantage := func(name string) int {
		if i, ok := vIdx[name]; ok {
			return i
		}
		// Results from a vantage that never registered: use defaults.
		vIdx[name] = len(in.Vantages)
		vantageNames = append(vantageNames, name)
		in.Vantages = append(in.Vantages, Vantage{Name: name, Fresh: freshFor(c.cfg.DefaultRound, c.cfg.DefaultTimeout), Timeout: c.cfg.DefaultTimeout.Microseconds()})
		return vIdx[name]
	}

	rows, err := tx.Query(ctx, `SELECT vantage, block, at, sent_at, state = 'up' FROM observations
		WHERE at >= $1 AND at <= $2 AND state IN ('up', 'down') ORDER BY vantage, block, at`,
		fromMicros(load), horizon)
	if err != nil {
		return nil, fmt.Errorf("load observations: %w", err)
	}
	in.Obs = map[int]map[int][]Obs{}
	var name string
	var block netip.Prefix
	var at, sent time.Time
	var up bool
	_, err = pgx.ForEachRow(rows, []any{&name, &block, &at, &sent, &up}, func() error {
		b, ok := bIdx[block]
		if !ok {
			return nil // a block no longer watched
		}
		v := vantage(name)
		if in.Obs[v] == nil {
			in.Obs[v] = map[int][]Obs{}
		}
		s := Down
		if up {
			s = Up
		}
		in.Obs[v][b] = append(in.Obs[v][b], Obs{At: micros(at), Sent: micros(sent), State: s})
		st.Observations++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load observations: %w", err)
	}

	rows, err = tx.Query(ctx, `SELECT r.vantage, r.sent_at, r.outcome IN ('reply', 'refused')
		FROM probe_results r JOIN targets t ON t.control AND t.kind = r.kind AND t.addr = r.addr AND t.port = r.port
		WHERE r.sent_at >= $1 AND r.sent_at <= $2 ORDER BY r.vantage, r.sent_at`, fromMicros(load), horizon)
	if err != nil {
		return nil, fmt.Errorf("load control results: %w", err)
	}
	in.Controls = map[int][]Control{}
	_, err = pgx.ForEachRow(rows, []any{&name, &sent, &up}, func() error {
		v := vantage(name)
		in.Controls[v] = append(in.Controls[v], Control{Sent: micros(sent), Reached: up})
		st.Controls++
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load control results: %w", err)
	}
	in.Mass = c.cfg.Mass

	out := Run(in)
	return c.write(ctx, tx, in, out, vantageNames, k, st)
}

func freshFor(round, timeout time.Duration) int64 {
	return (2*round + 2*timeout).Microseconds()
}

// loadFrame reads what the evidence is about: blocks, thresholds and
// vantages.
func (c *Correlator) loadFrame(ctx context.Context, tx pgx.Tx) (*Input, []string, error) {
	in := &Input{Thresholds: map[string]Thresholds{}}
	rows, err := tx.Query(ctx, `SELECT block, prefix, country FROM blocks ORDER BY block`)
	if err != nil {
		return nil, nil, fmt.Errorf("load blocks: %w", err)
	}
	var b Block
	if _, err := pgx.ForEachRow(rows, []any{&b.Prefix, &b.Network, &b.Country}, func() error {
		in.Blocks = append(in.Blocks, b)
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("load blocks: %w", err)
	}
	rows, err = tx.Query(ctx, `SELECT code, down_threshold, up_threshold, min_measurable FROM countries`)
	if err != nil {
		return nil, nil, fmt.Errorf("load countries: %w", err)
	}
	var code string
	var th Thresholds
	var down, up float32
	if _, err := pgx.ForEachRow(rows, []any{&code, &down, &up, &th.MinMeasurable}, func() error {
		th.Down, th.Up = float64(down), float64(up)
		in.Thresholds[code] = th
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("load countries: %w", err)
	}
	rows, err = tx.Query(ctx, `SELECT name, round_seconds, timeout_seconds FROM vantages ORDER BY name`)
	if err != nil {
		return nil, nil, fmt.Errorf("load vantages: %w", err)
	}
	var names []string
	var name string
	var round, timeout pgtype.Float4
	if _, err := pgx.ForEachRow(rows, []any{&name, &round, &timeout}, func() error {
		r, t := c.cfg.DefaultRound, c.cfg.DefaultTimeout
		if round.Valid && round.Float32 > 0 {
			r = time.Duration(float64(round.Float32) * float64(time.Second))
		}
		if timeout.Valid && timeout.Float32 > 0 {
			t = time.Duration(float64(timeout.Float32) * float64(time.Second))
		}
		names = append(names, name)
		in.Vantages = append(in.Vantages, Vantage{Name: name, Fresh: freshFor(r, t), Timeout: t.Microseconds()})
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("load vantages: %w", err)
	}
	return in, names, nil
}

// table names an interval table and how its key is written.
type table struct {
	name, key string
	extra     []string // columns beyond the common ones
}

var (
	blockTable   = table{"block_intervals", "block", []string{"country", "vantages"}}
	networkTable = table{"network_intervals", "network", []string{"country", "blocks_total", "blocks_measurable", "blocks_up", "blocks_down", "vantages"}}
	countryTable = table{"country_intervals", "country", []string{"blocks_total", "blocks_measurable", "blocks_up", "blocks_down", "vantages"}}
	healthTable  = table{"vantage_health", "vantage", []string{"reason"}}
)

// keyed is one key's derived intervals and the fixed columns of its rows.
type keyed struct {
	key     string
	country string
	total   int
	ivs     []Interval
}

func (c *Correlator) write(ctx context.Context, tx pgx.Tx, in *Input, out *Output, vantages []string, k int64, st *Stats) ([]Event, error) {
	var blocks, nets, countries, health []keyed
	totalNet := map[netip.Prefix]int{}
	totalCountry := map[string]int{}
	netCountry := map[netip.Prefix]string{}
	for _, b := range in.Blocks {
		totalNet[b.Network]++
		totalCountry[b.Country]++
		netCountry[b.Network] = b.Country
	}
	for i, tr := range out.Blocks {
		blocks = append(blocks, keyed{key: in.Blocks[i].Prefix.String(), country: in.Blocks[i].Country, ivs: intervals(tr)})
	}
	for n, tr := range out.Networks {
		nets = append(nets, keyed{key: n.String(), country: netCountry[n], total: totalNet[n], ivs: intervals(tr)})
	}
	for cc, tr := range out.Countries {
		countries = append(countries, keyed{key: cc, total: totalCountry[cc], ivs: intervals(tr)})
	}
	for v, h := range out.Health {
		ivs := intervals(h.Track)
		for i := range ivs {
			ivs[i].Reason = h.Reasons[ivs[i].From]
		}
		health = append(health, keyed{key: vantages[v], ivs: ivs})
	}
	st.Keys = len(blocks) + len(nets) + len(countries) + len(health)

	var events []Event
	for _, w := range []struct {
		t    table
		keys []keyed
	}{{blockTable, blocks}, {networkTable, nets}, {countryTable, countries}, {healthTable, health}} {
		ins, del, err := c.writeTable(ctx, tx, w.t, w.keys, k, &events)
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", w.t.name, err)
		}
		st.Inserted += ins
		st.Deleted += del
	}
	return events, nil
}

// row is an interval as stored, for comparison.
type row struct {
	key            string
	from, to       int64
	state          string
	se, sl, ee, el int64
	country        string
	total, meas    int
	up, down, n    int
	reason         string
}

func (t table) stateName(s State) string {
	if t.name == healthTable.name {
		switch s {
		case Up:
			return "healthy"
		case Down:
			return "unhealthy"
		}
		return "unknown"
	}
	return s.String()
}

func (t table) stateOf(name string) State {
	switch name {
	case "up", "healthy":
		return Up
	case "down", "unhealthy":
		return Down
	case "partial":
		return Partial
	}
	return Unknown
}

func (c *Correlator) writeTable(ctx context.Context, tx pgx.Tx, t table, keys []keyed, k int64, events *[]Event) (inserted, deleted int, err error) {
	if len(keys) == 0 {
		return 0, 0, nil
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].key < keys[j].key })
	names := make([]string, len(keys))
	for i, kd := range keys {
		names[i] = kd.key
	}
	keyType := "text"
	if t.key == "block" || t.key == "network" {
		keyType = "cidr"
	}
	stored := map[string][]Interval{}
	storedRows := map[string][]row{}
	rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT %[1]s::text, lower(during), upper(during), state,
			start_earliest, start_latest, end_earliest, end_latest, %[2]s
		FROM %[3]s WHERE %[1]s = ANY($1::%[4]s[]) AND (upper_inf(during) OR upper(during) > $2)
		ORDER BY %[1]s, lower(during)`, t.key, extraSelect(t), t.name, keyType), names, fromMicros(k))
	if err != nil {
		return 0, 0, err
	}
	for rows.Next() {
		var r row
		var key string
		var lo, hi, se, sl, ee, el pgtype.Timestamptz
		dest := []any{&key, &lo, &hi, &r.state, &se, &sl, &ee, &el}
		dest = append(dest, extraDest(&r)...)
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return 0, 0, err
		}
		r.key = key
		r.from, r.to = ts(lo), ts(hi)
		if !hi.Valid {
			r.to = open
		}
		r.se, r.sl, r.ee, r.el = ts(se), ts(sl), ts(ee), ts(el)
		storedRows[key] = append(storedRows[key], r)
		stored[key] = append(stored[key], Interval{From: r.from, To: r.to, State: t.stateOf(r.state),
			StartE: r.se, StartL: r.sl, EndE: r.ee, EndL: r.el, N: r.n, Up: r.up, Down: r.down, Meas: r.meas, Reason: r.reason})
	}
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}

	var del, add []row
	for _, kd := range keys {
		want := splice(stored[kd.key], kd.ivs, k)
		wantRows := make([]row, len(want))
		for i, iv := range want {
			r := row{key: kd.key, from: iv.From, to: iv.To, state: t.stateName(iv.State),
				se: iv.StartE, sl: iv.StartL, ee: iv.EndE, el: iv.EndL, country: kd.country,
				total: kd.total, meas: iv.Meas, up: iv.Up, down: iv.Down, n: iv.N, reason: iv.Reason}
			switch t.name {
			case blockTable.name:
				r.meas, r.up, r.down = 0, 0, 0 // a block row counts vantages only
			case healthTable.name:
				r.meas, r.up, r.down, r.n = 0, 0, 0, 0
			}
			wantRows[i] = r
		}
		have := map[row]bool{}
		for _, r := range storedRows[kd.key] {
			have[r] = true
		}
		wanted := map[row]bool{}
		for _, r := range wantRows {
			wanted[r] = true
			if !have[r] {
				add = append(add, r)
			}
		}
		for _, r := range storedRows[kd.key] {
			if !wanted[r] {
				del = append(del, r)
			}
		}
		collectEvents(t, kd, storedRows[kd.key], wantRows, events)
	}
	if len(del) > 0 {
		ks := make([]string, len(del))
		ls := make([]time.Time, len(del))
		for i, r := range del {
			ks[i], ls[i] = r.key, fromMicros(r.from)
		}
		tag, err := tx.Exec(ctx, fmt.Sprintf(`DELETE FROM %[1]s x USING unnest($1::%[3]s[], $2::timestamptz[]) d(k, l)
			WHERE x.%[2]s = d.k AND lower(x.during) = d.l`, t.name, t.key, keyType), ks, ls)
		if err != nil {
			return 0, 0, fmt.Errorf("delete: %w", err)
		}
		deleted = int(tag.RowsAffected())
	}
	if len(add) > 0 {
		if err := insertRows(ctx, tx, t, keyType, add); err != nil {
			return 0, 0, fmt.Errorf("insert: %w", err)
		}
		inserted = len(add)
	}
	return inserted, deleted, nil
}

func ts(t pgtype.Timestamptz) int64 {
	if !t.Valid {
		return 0
	}
	return micros(t.Time)
}

func tsOrNil(us int64) any {
	if us == 0 || us == open {
		return nil
	}
	return fromMicros(us)
}

func extraSelect(t table) string {
	switch t.name {
	case blockTable.name:
		return "country, 0, 0, 0, 0, vantages, ''"
	case networkTable.name:
		return "country, blocks_total, blocks_measurable, blocks_up, blocks_down, vantages, ''"
	case countryTable.name:
		return "'', blocks_total, blocks_measurable, blocks_up, blocks_down, vantages, ''"
	}
	return "'', 0, 0, 0, 0, 0, reason"
}

func extraDest(r *row) []any {
	return []any{&r.country, &r.total, &r.meas, &r.up, &r.down, &r.n, &r.reason}
}

func insertRows(ctx context.Context, tx pgx.Tx, t table, keyType string, rs []row) error {
	n := len(rs)
	keys := make([]string, n)
	lo, hi := make([]time.Time, n), make([]any, n)
	states := make([]string, n)
	se, sl, ee, el := make([]any, n), make([]any, n), make([]any, n), make([]any, n)
	country, reason := make([]string, n), make([]string, n)
	total, meas, up, down, vs := make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n), make([]int32, n)
	for i, r := range rs {
		keys[i], lo[i], hi[i], states[i] = r.key, fromMicros(r.from), tsOrNil(r.to), r.state
		se[i], sl[i], ee[i], el[i] = tsOrNil(r.se), tsOrNil(r.sl), tsOrNil(r.ee), tsOrNil(r.el)
		country[i], reason[i] = r.country, r.reason
		total[i], meas[i], up[i], down[i], vs[i] = int32(r.total), int32(r.meas), int32(r.up), int32(r.down), int32(r.n)
	}
	cols := "start_earliest, start_latest, end_earliest, end_latest"
	sel := "d.se, d.sl, d.ee, d.el"
	switch t.name {
	case blockTable.name:
		cols += ", country, vantages"
		sel += ", d.country, d.vs"
	case networkTable.name:
		cols += ", country, blocks_total, blocks_measurable, blocks_up, blocks_down, vantages"
		sel += ", d.country, d.total, d.meas, d.up, d.down, d.vs"
	case countryTable.name:
		cols += ", blocks_total, blocks_measurable, blocks_up, blocks_down, vantages"
		sel += ", d.total, d.meas, d.up, d.down, d.vs"
	default:
		cols += ", reason"
		sel += ", d.reason"
	}
	sql := fmt.Sprintf(`INSERT INTO %s (%s, during, state, %s)
		SELECT d.k, tstzrange(d.lo, d.hi, '[)'), d.state, %s
		FROM unnest($1::%s[], $2::timestamptz[], $3::timestamptz[], $4::text[],
			$5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::timestamptz[],
			$9::text[], $10::int[], $11::int[], $12::int[], $13::int[], $14::int[], $15::text[])
			AS d(k, lo, hi, state, se, sl, ee, el, country, total, meas, up, down, vs, reason)`,
		t.name, t.key, cols, sel, keyType)
	_, err := tx.Exec(ctx, sql, keys, lo, hi, states, se, sl, ee, el, country, total, meas, up, down, vs, reason)
	return err
}

// collectEvents reports outages of countries and networks that start or
// end with this write.
func collectEvents(t table, kd keyed, before, after []row, events *[]Event) {
	if t.name != countryTable.name && t.name != networkTable.name {
		return
	}
	scope := "country"
	if t.name == networkTable.name {
		scope = "network"
	}
	down := func(rs []row) map[int64]row {
		m := map[int64]row{}
		for _, r := range rs {
			if r.state == "down" {
				m[r.from] = r
			}
		}
		return m
	}
	was, is := down(before), down(after)
	overlapping := func(r row) (row, bool) {
		for _, o := range was {
			if o.from < r.to && r.from < o.to {
				return o, true
			}
		}
		return row{}, false
	}
	mk := func(kind string, r row) Event {
		e := Event{Kind: kind, Scope: scope, Start: fromMicros(r.from), BlocksTotal: r.total, BlocksDown: r.down}
		if r.to != open {
			e.End = fromMicros(r.to)
		}
		if scope == "country" {
			e.Country = kd.key
		} else {
			e.Country = kd.country
			e.Network, _ = netip.ParsePrefix(kd.key)
		}
		return e
	}
	froms := make([]int64, 0, len(is))
	for f := range is {
		froms = append(froms, f)
	}
	sort.Slice(froms, func(i, j int) bool { return froms[i] < froms[j] })
	for _, f := range froms {
		r := is[f]
		// An outage already known (perhaps with its start moved by late
		// results) is not news; its end is, once.
		old, known := overlapping(r)
		switch {
		case !known:
			*events = append(*events, mk("outage_started", r))
			if r.to != open {
				*events = append(*events, mk("outage_ended", r))
			}
		case old.to == open && r.to != open:
			*events = append(*events, mk("outage_ended", r))
		}
	}
}
