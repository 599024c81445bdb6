package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cutoffnet/cutoff/prober/bench"
	"github.com/cutoffnet/cutoff/prober/lab"
	storebench "github.com/cutoffnet/cutoff/store/bench"
	"github.com/cutoffnet/cutoff/store/scratch"
)

func benchCmd() *command {
	return &command{
		name:    "bench",
		summary: "benchmarks: the ICMP engine against zmap and fping, ingest, correlator, scheduler scale",
		help: `Each benchmark is bounded in time and size (flags), prints progress on
stderr and its figures on stdout. Benchmarks that need a database start a
throwaway PostgreSQL cluster unless --db names a server, on which they
create a scratch database and drop it afterwards. 'cutoff bench icmp'
needs root (it builds a lab of network namespaces) and, for the side by
side columns, zmap and fping (apt-get install -y zmap fping); a missing
peer is skipped and named.`,
		subs: []*command{benchICMPCmd(), benchIngestCmd(), benchCorrelateCmd(), benchScaleCmd(), benchAllCmd(), benchSweepCmd()},
	}
}

// benchDBFlags are the flags of benchmarks that write to PostgreSQL.
type benchDBFlags struct {
	db    *string
	fsync *bool
}

func addBenchDBFlags(fs *flag.FlagSet) benchDBFlags {
	return benchDBFlags{
		db:    fs.String("db", "", "PostgreSQL `SERVER` (URL or keyword/value string) on which to create, and afterwards drop, a scratch database; default: a throwaway cluster"),
		fsync: fs.Bool("fsync", false, "run the throwaway cluster with fsync on (a --db server keeps its own settings)"),
	}
}

func (f benchDBFlags) open(ctx context.Context, a *app) (*scratch.DB, error) {
	return scratch.New(ctx, *f.db, scratch.Options{Durable: *f.fsync, Log: a.log})
}

// icmpFlags are the ICMP comparison's flags.
type icmpFlags struct {
	rng            *string
	vantage        *string
	rates, tools   *string
	timeout, limit *time.Duration
}

func addICMPFlags(fs *flag.FlagSet) icmpFlags {
	return icmpFlags{
		rng:     fs.String("range", bench.DefaultRange.String(), "AnyIP `PREFIX` of the lab country that every tool sweeps (inside 198.18.0.0/15, at most 65,536 addresses: fping's limit)"),
		vantage: fs.String("vantage", "vp1", "vantage to probe from"),
		rates:   fs.String("rates", "10000,50000,100000,max", "probe rates to compare at, per second; max: as fast as each tool goes"),
		tools:   fs.String("tools", strings.Join(bench.Tools, ","), "tools to compare"),
		timeout: fs.Duration("timeout", time.Second, "how long each tool waits for replies"),
		limit:   fs.Duration("limit", time.Minute, "bound on each tool's sending, per run"),
	}
}

func (f icmpFlags) config() (netip.Prefix, []int, []string, error) {
	rng, err := netip.ParsePrefix(*f.rng)
	if err != nil || rng != rng.Masked() || !rng.Addr().Is4() {
		return rng, nil, nil, usagef("--range %q: want an IPv4 prefix without host bits", *f.rng)
	}
	if rng.Bits() < 16 {
		return rng, nil, nil, usagef("--range %s: at most a /16 (fping numbers probes with 16 bits)", rng)
	}
	var rates []int
	for _, s := range strings.Split(*f.rates, ",") {
		s = strings.TrimSpace(s)
		if s == "max" {
			rates = append(rates, 0)
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(s, "k"))
		if err != nil || n <= 0 {
			return rng, nil, nil, usagef("--rates: %q is not a rate (want e.g. 10000, 50k or max)", s)
		}
		if strings.HasSuffix(s, "k") {
			n *= 1000
		}
		rates = append(rates, n)
	}
	var tools []string
	for _, t := range strings.Split(*f.tools, ",") {
		t = strings.TrimSpace(t)
		known := false
		for _, k := range bench.Tools {
			known = known || k == t
		}
		if !known {
			return rng, nil, nil, usagef("--tools: unknown tool %q (want %s)", t, strings.Join(bench.Tools, ", "))
		}
		tools = append(tools, t)
	}
	if *f.timeout <= 0 || *f.limit <= 0 {
		return rng, nil, nil, usagef("--timeout and --limit must be positive")
	}
	return rng, rates, tools, nil
}

func runICMP(ctx context.Context, a *app, f icmpFlags) error {
	rng, rates, tools, err := f.config()
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: it builds a lab of network namespaces")
	}
	cfg, err := bench.LabConfig(rng)
	if err != nil {
		return badInput(err)
	}
	if cfg.StateDir, err = os.MkdirTemp("", "cutoff-bench-lab-"); err != nil {
		return err
	}
	defer os.RemoveAll(cfg.StateDir)
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	a.log.Info("bringing the benchmark lab up", "prefix", cfg.Prefix, "anyip", rng)
	l, err := lab.Up(ctx, cfg)
	defer func() {
		// Down even when interrupted: a fresh context.
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if l != nil {
			l.Close()
		}
		if err := lab.Down(dctx, cfg); err != nil {
			a.log.Error("lab down", "prefix", cfg.Prefix, "err", err)
		}
	}()
	if err != nil {
		return err
	}
	b := &bench.ICMP{Lab: l, Vantage: *f.vantage, Rates: rates, Tools: tools,
		Worker: []string{exe, "bench", "sweep"}, Timeout: *f.timeout, Limit: *f.limit, Log: a.log}
	rep, err := b.Run(ctx)
	if rep != nil {
		rep.Write(a.stdout)
	}
	return err
}

func benchICMPCmd() *command {
	return &command{
		name:    "icmp",
		summary: "cutoff's ICMP sweep vs zmap and fping over the same lab range (root)",
		help: `Builds a lab of its own whose country answers ICMP echo on every address
of --range, and from one vantage sweeps the range once per tool per rate:
cutoff's ICMP engine (in a child process), zmap --probe-module=icmp_echoscan
and fping, each inside the vantage's namespace. Prints probes per second,
replies matched against what the country sent (its OutEchoReps), and CPU
seconds (user+sys from each process's rusage), with ratios against cutoff.
No packet can leave the lab: its namespaces have no route outside
198.18.0.0/15 (checked before every run), zmap gets an allowlist naming only
the range and fping a list of its addresses.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			f := addICMPFlags(fs)
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				return runICMP(ctx, a, f)
			}
		},
	}
}

// ingestFlags are the ingest benchmark's flags.
type ingestFlags struct {
	results, batch *int
	limit          *time.Duration
}

func addIngestFlags(fs *flag.FlagSet) ingestFlags {
	return ingestFlags{
		results: fs.Int("results", 2_000_000, "results through each path"),
		batch:   fs.Int("batch", 10_000, "batch size of the raw store.Ingest path"),
		limit:   fs.Duration("limit", 3*time.Minute, "bound on each path: what is in by then counts"),
	}
}

func runIngest(ctx context.Context, a *app, dbf benchDBFlags, f ingestFlags) error {
	if *f.results <= 0 || *f.batch <= 0 || *f.limit <= 0 {
		return usagef("--results, --batch and --limit must be positive")
	}
	db, err := dbf.open(ctx, a)
	if err != nil {
		return err
	}
	defer db.Close()
	rep, err := bench.Ingest{DB: db.URL, Results: *f.results, Batch: *f.batch, Limit: *f.limit, Log: a.log}.Run(ctx)
	if rep != nil {
		rep.Write(a.stdout)
	}
	return err
}

func benchIngestCmd() *command {
	return &command{
		name:    "ingest",
		summary: "results per second into PostgreSQL, through the agent and straight through store.Ingest",
		help: `Hands synthetic results to the agent's path (collector, spool write and
fsync, writer, COPY) and times them into the database; then the same
number straight through store.Ingest in batches, for comparison. Prints
whether the server runs with fsync.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			dbf := addBenchDBFlags(fs)
			f := addIngestFlags(fs)
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				return runIngest(ctx, a, dbf, f)
			}
		},
	}
}

// correlateFlags are the correlator benchmark's flags.
type correlateFlags struct {
	blocks, vantages   *int
	span, round, limit *time.Duration
}

func addCorrelateFlags(fs *flag.FlagSet) correlateFlags {
	return correlateFlags{
		blocks:   fs.Int("blocks", 100_000, "blocks (/24s) watched"),
		vantages: fs.Int("vantages", 2, "vantages reporting on every block"),
		span:     fs.Duration("span", 24*time.Hour, "time covered by the synthetic verdicts"),
		round:    fs.Duration("round", 11*time.Minute, "round length: one verdict per block per vantage per round"),
		limit:    fs.Duration("limit", 20*time.Minute, "bound on each step (ingest, each pass)"),
	}
}

func runCorrelate(ctx context.Context, a *app, dbf benchDBFlags, f correlateFlags) error {
	if *f.blocks <= 0 || *f.vantages <= 0 || *f.span <= 0 || *f.round <= 0 || *f.limit <= 0 || *f.span < *f.round {
		return usagef("--blocks, --vantages, --span, --round and --limit must be positive, --span at least one round")
	}
	db, err := dbf.open(ctx, a)
	if err != nil {
		return err
	}
	defer db.Close()
	rep, err := storebench.Correlate{DB: db.URL, Blocks: *f.blocks, Vantages: *f.vantages, Span: *f.span,
		Round: *f.round, Limit: *f.limit, Log: a.log}.Run(ctx)
	if rep != nil {
		rep.Write(a.stdout)
	}
	return err
}

func benchCorrelateCmd() *command {
	return &command{
		name:    "correlate",
		summary: "verdicts per second through the correlator; a day of 100,000 blocks from 2 vantages",
		help: `Ingests a synthetic day of verdicts (every block visited once a round by
every vantage, with a country, some networks and some blocks going dark),
then times the correlator's first pass over it, a recompute over what it
stored, and the pass folding in one more round. Prints verdicts per
second, wall time, and the Go heap at its peak.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			dbf := addBenchDBFlags(fs)
			f := addCorrelateFlags(fs)
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				return runCorrelate(ctx, a, dbf, f)
			}
		},
	}
}

type scaleFlags struct {
	blocks, rounds *int
	limit          *time.Duration
}

func addScaleFlags(fs *flag.FlagSet) scaleFlags {
	return scaleFlags{
		blocks: fs.Int("blocks", 1_000_000, "blocks the scheduler tracks"),
		rounds: fs.Int("rounds", 2, "rounds timed after the first"),
		limit:  fs.Duration("limit", 10*time.Minute, "bound on the whole benchmark"),
	}
}

func runScale(ctx context.Context, a *app, f scaleFlags) error {
	if *f.blocks <= 0 || *f.blocks > 1<<20 || *f.rounds <= 0 || *f.limit <= 0 {
		return usagef("--blocks must be 1 to %d, --rounds and --limit positive", 1<<20)
	}
	ctx, cancel := context.WithTimeout(ctx, *f.limit)
	defer cancel()
	rep, err := bench.Scale{Blocks: *f.blocks, Rounds: *f.rounds, Log: a.log}.Run(ctx)
	if rep != nil {
		rep.Write(a.stdout)
	}
	return err
}

func benchScaleCmd() *command {
	return &command{
		name:    "scale",
		summary: "scheduler memory and CPU per tracked block, 1,000,000 blocks on the in-memory transport",
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			f := addScaleFlags(fs)
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				return runScale(ctx, a, f)
			}
		},
	}
}

func benchAllCmd() *command {
	return &command{
		name:    "all",
		summary: "run every benchmark in sequence with its defaults",
		help: `Runs icmp (skipped with a note when not root), ingest, correlate and scale,
each with its default sizes, one after the other; a failing benchmark is
reported and the next one still runs.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			dbf := addBenchDBFlags(fs)
			skip := fs.String("skip", "", "benchmarks to leave out, e.g. icmp,correlate")
			// Each benchmark's own flags, at their defaults.
			own := func() *flag.FlagSet { return flag.NewFlagSet("", flag.ContinueOnError) }
			icmp, ingest, corr, scale := addICMPFlags(own()), addIngestFlags(own()), addCorrelateFlags(own()), addScaleFlags(own())
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				skipped := map[string]bool{}
				for _, s := range strings.Split(*skip, ",") {
					if s = strings.TrimSpace(s); s != "" {
						skipped[s] = true
					}
				}
				steps := []struct {
					name string
					run  func() error
				}{
					{"icmp", func() error {
						if os.Geteuid() != 0 {
							fmt.Fprintln(a.stdout, "icmp: skipped, needs root (network namespaces)")
							return nil
						}
						return runICMP(ctx, a, icmp)
					}},
					{"ingest", func() error { return runIngest(ctx, a, dbf, ingest) }},
					{"correlate", func() error { return runCorrelate(ctx, a, dbf, corr) }},
					{"scale", func() error { return runScale(ctx, a, scale) }},
				}
				var failed []string
				for i, s := range steps {
					if skipped[s.name] {
						continue
					}
					if i > 0 {
						fmt.Fprintln(a.stdout)
					}
					a.log.Info("benchmark", "name", s.name)
					if err := s.run(); err != nil {
						if ctx.Err() != nil {
							return err
						}
						fmt.Fprintf(a.stdout, "%s: failed: %v\n", s.name, err)
						failed = append(failed, s.name)
					}
				}
				if len(failed) > 0 {
					return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
				}
				return nil
			}
		},
	}
}

// benchSweepCmd is cutoff's side of the ICMP comparison, started by
// 'cutoff bench icmp' inside the vantage's namespace.
func benchSweepCmd() *command {
	return &command{
		name: "sweep", summary: "sweep a lab range once with the ICMP engine; print counts as JSON", hidden: true,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			var s bench.Sweep
			bench.SweepFlags(fs, &s)
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				res, err := s.Run(ctx)
				if err != nil {
					return err
				}
				return json.NewEncoder(a.stdout).Encode(res)
			}
		},
	}
}
