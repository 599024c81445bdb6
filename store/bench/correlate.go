// Package bench measures the center's correlator (`cutoff bench
// correlate`): verdicts folded per second, and the time to derive a day of
// a large watch list from scratch and again over what is stored.
//
// Data enter as a synthetic world (blocks, networks, countries and the
// verdicts two vantages would have sent, with outages) ingested through
// store.Ingest into a database the caller provides (store/scratch makes a
// throwaway one); figures leave as a CorrelateReport.
package bench

import (
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/correlate"
)

// Correlate is the correlator benchmark: Blocks /24s in networks of 256
// (/16s) spread over ten countries, each visited once a Round by each of
// Vantages vantages over Span, with outages: one country dark for two
// hours, one network of every other country for half an hour, and one
// block in 200 missing one round. Verdicts and control results go in
// through store.Ingest, one batch per vantage per round; then the
// correlator makes its first pass over the whole span (deriving
// everything), recomputes the span over what it stored, and folds in one
// more round as it would in steady state.
type Correlate struct {
	DB       string
	Blocks   int           // default 100,000
	Vantages int           // default 2
	Span     time.Duration // default 24h
	Round    time.Duration // default 11 min
	// Limit bounds each step (ingest, each pass); default 20 min.
	Limit time.Duration
	Log   *slog.Logger
}

// CorrelateReport holds the figures.
type CorrelateReport struct {
	Blocks, Networks, Countries, Vantages int
	Span, Round                           time.Duration
	// Observations and Controls ingested over the span, and how long
	// that took.
	Observations, Controls int64
	Ingest                 time.Duration
	// First is the first pass (everything new), Recompute a recompute of
	// the whole span over the stored intervals, Next the pass folding in
	// one more round.
	First, Recompute, Next correlate.Stats
	// PeakHeap is the largest Go heap seen during the passes; HeapBefore
	// the heap before them (the benchmark's own).
	PeakHeap, HeapBefore uint64
	// CountryOutages found, and how many the world has.
	CountryOutages, WantOutages int
}

const benchCountries = 10

// Rate is verdicts folded per second by a pass.
func Rate(s correlate.Stats) float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Observations) / s.Elapsed.Seconds()
}

// Run builds the world, ingests it and measures the passes.
func (c Correlate) Run(ctx context.Context) (*CorrelateReport, error) {
	if c.Blocks <= 0 {
		c.Blocks = 100_000
	}
	if c.Blocks > 1<<20 {
		return nil, fmt.Errorf("correlate bench: at most %d blocks", 1<<20)
	}
	if c.Vantages <= 0 {
		c.Vantages = 2
	}
	if c.Span <= 0 {
		c.Span = 24 * time.Hour
	}
	if c.Round <= 0 {
		c.Round = 11 * time.Minute
	}
	if c.Limit <= 0 {
		c.Limit = 20 * time.Minute
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	st, err := store.Open(ctx, c.DB)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	w := newWorld(c)
	rep := &CorrelateReport{Blocks: c.Blocks, Networks: len(w.networks), Countries: benchCountries,
		Vantages: c.Vantages, Span: c.Span, Round: c.Round}
	if c.Span >= countryOutageEnd {
		rep.WantOutages = 1
	}
	if err := w.setup(ctx, st); err != nil {
		return nil, err
	}

	c.Log.Info("ingesting the synthetic world", "blocks", c.Blocks, "vantages", c.Vantages, "span", c.Span, "round", c.Round,
		"verdicts", int64(c.Blocks)*int64(c.Vantages)*int64(c.Span/c.Round))
	ictx, cancel := context.WithTimeout(ctx, c.Limit)
	start := time.Now()
	rounds := int(c.Span / c.Round)
	for k := range rounds {
		obs, ctl, err := w.ingestRound(ictx, st, k)
		if err != nil {
			cancel()
			return nil, err
		}
		rep.Observations += obs
		rep.Controls += ctl
		if k%20 == 19 {
			c.Log.Info("ingesting", "round", k+1, "of", rounds, "verdicts", rep.Observations,
				"rate", int(float64(rep.Observations)/time.Since(start).Seconds()))
		}
	}
	rep.Ingest = time.Since(start)
	cancel()

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rep.HeapBefore = before.HeapAlloc
	peak := watchHeap()
	cor := correlate.New(st.Pool(), correlate.Config{Log: c.Log})

	c.Log.Info("first pass: the whole span, from nothing")
	if rep.First, err = timed(ctx, c.Limit, cor.Pass); err != nil {
		return nil, err
	}
	c.Log.Info("recompute of the whole span over what is stored")
	if rep.Recompute, err = timed(ctx, c.Limit, func(ctx context.Context) (correlate.Stats, error) {
		return cor.Recompute(ctx, w.t0)
	}); err != nil {
		return nil, err
	}
	c.Log.Info("one more round, then a pass (steady state)")
	if _, _, err := w.ingestRound(ctx, st, rounds); err != nil {
		return nil, err
	}
	if rep.Next, err = timed(ctx, c.Limit, cor.Pass); err != nil {
		return nil, err
	}
	rep.PeakHeap = peak()
	err = st.Pool().QueryRow(ctx, `SELECT count(*) FROM country_outages WHERE started_at >= $1`, w.t0).Scan(&rep.CountryOutages)
	if err != nil {
		return nil, fmt.Errorf("count outages: %w", err)
	}
	return rep, nil
}

func timed(ctx context.Context, limit time.Duration, fn func(context.Context) (correlate.Stats, error)) (correlate.Stats, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	return fn(ctx)
}

// watchHeap samples the heap every 20 ms until the returned function is
// called, which returns the largest value seen.
func watchHeap() func() uint64 {
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 {
		close(stop)
		wg.Wait()
		return peak.Load()
	}
}

// world is the synthetic watch list and what happens to it.
type world struct {
	c        Correlate
	t0       time.Time
	blocks   []netip.Prefix
	networks []netip.Prefix
	vantages []string
	control  netip.Addr
}

func newWorld(c Correlate) *world {
	// Whole days before today, so every verdict lies in the past.
	t0 := time.Now().UTC().Truncate(24 * time.Hour).Add(-c.Span.Truncate(24*time.Hour) - 24*time.Hour)
	w := &world{c: c, t0: t0, control: netip.MustParseAddr("198.18.0.10")}
	for i := range c.Blocks {
		// 240.0.0.0/4 is reserved: these blocks exist only as rows.
		a := uint32(240)<<24 | uint32(i)<<8
		w.blocks = append(w.blocks, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), 0}), 24))
	}
	for i := 0; i < c.Blocks; i += 256 {
		w.networks = append(w.networks, netip.PrefixFrom(w.blocks[i].Addr(), 16))
	}
	for v := range c.Vantages {
		w.vantages = append(w.vantages, fmt.Sprintf("bench%d", v+1))
	}
	return w
}

func countryOf(network int) string { return fmt.Sprintf("X%c", 'A'+network%benchCountries) }

// setup registers the countries and their networks (the blocks follow),
// the control target and the vantages.
func (w *world) setup(ctx context.Context, st *store.Store) error {
	byCountry := map[string][]store.Prefix{}
	for i, n := range w.networks {
		p := n
		if rest := w.c.Blocks - i*256; rest < 256 {
			// A last, partial network: cover exactly its blocks.
			for _, q := range coverBlocks(n.Addr(), rest) {
				byCountry[countryOf(i)] = append(byCountry[countryOf(i)], store.Prefix{Prefix: q})
			}
			continue
		}
		byCountry[countryOf(i)] = append(byCountry[countryOf(i)], store.Prefix{Prefix: p})
	}
	var imps []store.Import
	for cc, ps := range byCountry {
		imps = append(imps, store.Import{Country: cc, Name: "Bench " + cc, Source: "bench", Prefixes: ps})
	}
	w.c.Log.Info("importing the watch list", "countries", len(imps), "networks", len(w.networks), "blocks", w.c.Blocks)
	if _, err := st.ImportPrefixes(ctx, imps...); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	if _, err := st.AddTarget(ctx, store.Target{Kind: "icmp", Addr: w.control, Control: true}); err != nil {
		return fmt.Errorf("control target: %w", err)
	}
	for _, v := range w.vantages {
		if err := st.Beat(ctx, store.Heartbeat{Vantage: v, Round: w.c.Round, Timeout: 5 * time.Second, Version: "bench"}); err != nil {
			return err
		}
	}
	return nil
}

// coverBlocks covers n /24s from a with prefixes, largest first.
func coverBlocks(a netip.Addr, n int) []netip.Prefix {
	var out []netip.Prefix
	base := a.As4()
	off := 0
	for size := 128; size >= 1; size /= 2 {
		if n-off >= size {
			b := base
			b[2] += byte(off)
			bits := 24
			for s := size; s > 1; s /= 2 {
				bits--
			}
			out = append(out, netip.PrefixFrom(netip.AddrFrom4(b), bits))
			off += size
		}
	}
	return out
}

// phase spreads a vantage's visits to a block over the round, as the
// scheduler does.
func (w *world) phase(v, b int) time.Duration {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d", v, b)
	return time.Duration(h.Sum64() % uint64(w.c.Round))
}

// The country outage of the world: country XA, dark from 14:00 to 16:00.
const countryOutageStart, countryOutageEnd = 14 * time.Hour, 16 * time.Hour

// down says whether block b is dark at offset d: country XA for two hours
// from 14:00; network 1 of each other country for 30 min at an hour of
// its own; and one block in 200 for one round at a time of its own.
func (w *world) down(b int, d time.Duration) bool {
	net := b / 256
	cc := net % benchCountries
	if cc == 0 && d >= countryOutageStart && d < countryOutageEnd {
		return true
	}
	if net/benchCountries == 1 && cc != 0 {
		at := time.Duration(cc) * 2 * time.Hour
		if d >= at && d < at+30*time.Minute {
			return true
		}
	}
	if b%200 == 7 {
		at := time.Duration(uint64(b)*2654435761%uint64(w.c.Span/w.c.Round)) * w.c.Round
		if d >= at && d < at+w.c.Round {
			return true
		}
	}
	return false
}

// ingestRound ingests round k: each vantage's verdicts on every block
// and its control result, one batch per vantage.
func (w *world) ingestRound(ctx context.Context, st *store.Store, k int) (obs, ctl int64, err error) {
	for v, name := range w.vantages {
		var b store.Batch
		b.Observations = make([]store.Observation, 0, len(w.blocks))
		for bi, blk := range w.blocks {
			d := time.Duration(k)*w.c.Round + w.phase(v, bi)
			o := store.Observation{Vantage: name, Block: blk, Unit: blk, SentAt: w.t0.Add(d), At: w.t0.Add(d + 30*time.Millisecond),
				Round: int64(k), State: "up", Belief: 0.99, Probes: 1, Replies: 1}
			if w.down(bi, d) {
				o.State, o.Belief, o.Probes, o.Replies, o.At = "down", 0.05, 5, 0, w.t0.Add(d+5*time.Second)
			}
			b.Observations = append(b.Observations, o)
		}
		sent := w.t0.Add(time.Duration(k)*w.c.Round + w.phase(v, -1))
		b.Results = []store.Result{{Vantage: name, Kind: "icmp", Addr: w.control, SentAt: sent, RTT: time.Millisecond,
			Outcome: "reply", Responder: w.control, Round: int64(k)}}
		n, err := st.Ingest(ctx, b)
		if err != nil {
			return obs, ctl, fmt.Errorf("ingest round %d of %s: %w", k, name, err)
		}
		obs += n.Observations
		ctl += n.Results
	}
	return obs, ctl, nil
}

// Write prints the figures.
func (r *CorrelateReport) Write(w io.Writer) {
	fmt.Fprintf(w, "Correlator: %d blocks in %d networks and %d countries, %d vantages, %s at %s rounds.\n",
		r.Blocks, r.Networks, r.Countries, r.Vantages, r.Span, r.Round)
	fmt.Fprintf(w, "  ingest       %d verdicts + %d control results in %.1f s (%.0f rows/s through store.Ingest)\n",
		r.Observations, r.Controls, r.Ingest.Seconds(), float64(r.Observations+r.Controls)/r.Ingest.Seconds())
	for _, p := range []struct {
		name string
		s    correlate.Stats
	}{{"first pass", r.First}, {"recompute", r.Recompute}, {"next round", r.Next}} {
		fmt.Fprintf(w, "  %-12s %8.0f verdicts/s  (%d verdicts, %d keys, %d rows written, %d deleted in %.2f s)\n",
			p.name, Rate(p.s), p.s.Observations, p.s.Keys, p.s.Inserted, p.s.Deleted, p.s.Elapsed.Seconds())
	}
	fmt.Fprintf(w, "  memory       peak Go heap %.0f MiB during the passes (%.0f MiB before them)\n",
		float64(r.PeakHeap)/(1<<20), float64(r.HeapBefore)/(1<<20))
	fmt.Fprintf(w, "  outages      %d country outage(s) derived (the world has %d)\n", r.CountryOutages, r.WantOutages)
}
