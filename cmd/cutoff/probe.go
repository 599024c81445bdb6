package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cutoffnet/cutoff/prober/agent"
)

func probeCmd() *command {
	return &command{
		name:    "probe",
		summary: "run a vantage point: probe the plan round after round, results into PostgreSQL",
		help: `Registers the vantage, loads its plan from PostgreSQL (and refreshes it),
runs the scheduler over the ICMP, TCP and DNS engines, and writes every
result and verdict to the database. Each batch is first appended to an
on-disk spool (--spool): while the database is unreachable or slow the
spool grows, and it is replayed in order when the database returns;
after a crash the agent replays what was not acknowledged. SIGTERM
flushes and exits cleanly.

Connect with a login in the cutoff_prober role: it may read the plan and
insert results, never rewrite them. ICMP needs CAP_NET_RAW (setcap
cap_net_raw+ep $(which cutoff)) or an unprivileged ping socket
(net.ipv4.ping_group_range); never run the prober as root.

Only rows the database refuses as bad data (a value out of range, a
broken constraint) leave the spool without landing: they are set aside
in SPOOL/rejected, each file with a .why note. Once the cause is fixed
(a migration, say), --replay-rejected puts them in and exits; rows still
refused stay, alone, in their file. Any other refusal (permissions, a
read-only standby, timeouts) keeps the batch in the spool, retried.

Every flag can also be set in a YAML file (--config) under the same name.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			d := agent.Defaults()
			config := fs.String("config", "", "YAML file with the same keys as these flags (flags win)")
			db := dbFlag(fs)
			vantage := fs.String("vantage", "", "this vantage's name (required)")
			var countries, allow, optOut stringList
			fs.Var(&countries, "country", "country to probe (repeatable; default all watched countries)")
			round := fs.Duration("round", d.Round, "round length: every unit is visited once per round")
			timeout := fs.Duration("timeout", d.Timeout, "probe timeout (short timeouts invent loss on the real internet)")
			recheck := fs.Duration("recheck", d.Recheck, "re-check interval after a unit changes state")
			rate := fs.Int("rate", d.Rate, "cap on probes per second, all kinds together")
			spoolDir := fs.String("spool", d.Spool, "directory for the on-disk spool and the cached plan")
			metrics := fs.String("metrics", "", "serve Prometheus /metrics on this address (e.g. :9108)")
			fs.Var(&allow, "allow-reserved", "reserved `PREFIX` that may be probed anyway (repeatable; the lab uses 198.18.0.0/15)")
			fs.Var(&optOut, "opt-out", "`PREFIX` never to probe (repeatable)")
			contact := fs.String("contact", d.Contact, "contact/opt-out URL named in every ICMP probe's payload")
			icmpMode := fs.String("icmp-mode", d.ICMPMode, "ICMP socket: auto (raw, else ping socket), raw or ping")
			once := fs.Bool("once", false, "run one round (it lasts --round: visits are spread across it), write everything, and exit (for cron and tests)")
			sweep := fs.Bool("sweep", false, "instead of adaptive visits, probe every address of every block once (a full snapshot: replies from every responsive host, timeouts from silent ones) and exit")
			refresh := fs.Duration("plan-refresh", d.PlanRefresh, "how often to reload the plan")
			flush := fs.Duration("flush", d.Flush, "how often the spool is fsynced (results are written into it as they come; a power cut loses at most this much)")
			drain := fs.Duration("drain", d.Drain, "on exit, how long to keep writing the spool to the database")
			heartbeat := fs.Duration("heartbeat", d.Heartbeat, "how often to report the vantage and measure the clock against the database")
			seed := fs.Uint64("seed", 0, "fix the scheduler's pseudo-random choices (tests)")
			replay := fs.Bool("replay-rejected", false, "put the batches set aside in SPOOL/rejected into the database (--db), then exit")
			timeScale := fs.Float64("time-scale", 0, "compress the scheduler's hourly budgets by this factor, for compressed lab replays only (e.g. 900 for an hour in 4 s)")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				cfg := agent.Defaults()
				if *config != "" {
					if err := agent.LoadConfig(*config, &cfg); err != nil {
						return badInput(err)
					}
				}
				// Flags given on the command line override the file.
				set := map[string]bool{}
				fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
				str := func(name string, dst *string, v string) {
					if set[name] {
						*dst = v
					}
				}
				dur := func(name string, dst *time.Duration, v time.Duration) {
					if set[name] {
						*dst = v
					}
				}
				str("db", &cfg.DB, *db)
				str("vantage", &cfg.Vantage, *vantage)
				str("spool", &cfg.Spool, *spoolDir)
				str("metrics", &cfg.Metrics, *metrics)
				str("contact", &cfg.Contact, *contact)
				str("icmp-mode", &cfg.ICMPMode, *icmpMode)
				dur("round", &cfg.Round, *round)
				dur("timeout", &cfg.Timeout, *timeout)
				dur("recheck", &cfg.Recheck, *recheck)
				dur("plan-refresh", &cfg.PlanRefresh, *refresh)
				dur("flush", &cfg.Flush, *flush)
				dur("drain", &cfg.Drain, *drain)
				dur("heartbeat", &cfg.Heartbeat, *heartbeat)
				if set["rate"] {
					cfg.Rate = *rate
				}
				if set["once"] {
					cfg.Once = *once
				}
				if set["sweep"] {
					cfg.Sweep = *sweep
				}
				if set["time-scale"] {
					cfg.TimeScale = *timeScale
				}
				if set["seed"] {
					cfg.Seed = *seed
				}
				if set["country"] {
					cfg.Countries = countries
				}
				if set["allow-reserved"] {
					cfg.AllowReserved = allow
				}
				if set["opt-out"] {
					cfg.OptOut = optOut
				}
				if *replay {
					return replayRejected(ctx, a, cfg)
				}
				if err := cfg.Validate(); err != nil {
					return badInput(err)
				}
				if bi, ok := debug.ReadBuildInfo(); ok {
					agent.Version = bi.Main.Version
				}
				reg := prometheus.NewRegistry()
				reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
				ag, err := agent.New(cfg, a.log, reg)
				if err != nil {
					return badInput(err)
				}
				return ag.Run(ctx)
			}
		},
	}
}

func replayRejected(ctx context.Context, a *app, cfg agent.Config) error {
	if cfg.Spool == "" {
		return usagef("--replay-rejected needs --spool")
	}
	r, err := agent.ReplayRejected(ctx, cfg.DB, cfg.Spool, a.log)
	fmt.Fprintf(a.stdout, "%d rejected batch files: %d results and %d observations stored (new), %d files kept (%d rows still refused)\n",
		r.Files, r.Stored.Results, r.Stored.Observations, r.Kept, r.KeptRows)
	if err != nil {
		return err
	}
	if r.Kept > 0 {
		return fmt.Errorf("%d files in %s still refused: see the .why file beside each", r.Kept, filepath.Join(cfg.Spool, "rejected"))
	}
	return nil
}
