package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/replay"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtemp"
	"github.com/cutoffnet/cutoff/store/report"
)

func demoCmd() *command {
	return &command{
		name:    "demo",
		summary: "replay North Korea's December 2014 cut-offs on the lab, end to end (root)",
		help: `Replays 21 Dec 12:00 to 23 Dec 18:00 UTC, 2014 on the lab: an unstable
network on the 21st, a vantage losing its own uplink for an hour, the
9 h 31 min cut-off of the 22nd and the two short blackouts of the 23rd.
It starts a throwaway PostgreSQL (unless --db or $DATABASE_URL names one),
migrates it, brings the lab up, registers the lab's country and runs a
census, starts a prober per vantage and the correlator, plays the
timeline compressed (by default an hour in 4 s, rounds alike: 11 minutes
in 0.73 s; about 4 minutes in all), then prints the derived country
outages next to the truth, on the story's clock, and writes report.html.
It cleans up after itself unless --keep.

A database given with --db gets the lab's country (code KP, addresses in
198.19.0.0/22): use a scratch database.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			db := dbFlag(fs)
			scale := fs.String("scale", "", "time compression, e.g. 1h=4s (default: the scenario's)")
			scenario := fs.String("scenario", "", "scenario file (default: the shipped December 2014 timeline)")
			out := fs.String("out", "report.html", "where to write the HTML report")
			keep := fs.Bool("keep", false, "keep the throwaway database and the work directory")
			prefix := fs.String("prefix", "cutoffdemo", "name prefix of the lab's namespaces")
			tolerance := fs.Float64("tolerance", 2, "how many rounds an outage's start or end may be off before the demo fails")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if os.Geteuid() != 0 {
					return fmt.Errorf("the demo builds its lab in network namespaces: run it as root")
				}
				var sc *lab.Scenario
				var err error
				if *scenario == "" {
					sc, err = lab.ParseScenario("december-2014.scn", bytes.NewReader(replay.December2014))
				} else {
					sc, err = lab.LoadScenario(*scenario)
				}
				if err != nil {
					return badInput(err)
				}
				var factor float64
				if *scale != "" {
					if factor, err = lab.ParseScale(*scale); err != nil {
						return usagef("--scale: %v", err)
					}
				}
				cfg := lab.Default()
				cfg.Prefix = *prefix
				cfg.Country.Code, cfg.Country.Name = "KP", "North Korea (lab)"

				// Empty with PG* variables set: they name the database, here
				// and in the probers and the correlator (same environment).
				url := store.ResolveURL(*db)
				if url == "" && os.Getenv("PGHOST") == "" && os.Getenv("PGDATABASE") == "" {
					fmt.Fprintln(a.stderr, "starting a throwaway PostgreSQL…")
					cl, err := pgtemp.Start(ctx, pgtemp.Options{Log: a.log, Detach: *keep})
					if err != nil {
						return err
					}
					url = cl.URL("postgres")
					if *keep {
						defer fmt.Fprintf(a.stderr, "kept the database, still running: --db %q\n  when done: kill %d && rm -rf %s\n", url, cl.PID(), cl.Dir)
					} else {
						defer cl.Stop()
					}
				}
				st, err := store.Open(ctx, url)
				if err != nil {
					return err
				}
				defer st.Close()
				if _, err := st.Migrate(ctx); err != nil {
					return err
				}

				progress := func(p replay.Progress) {
					bar := strings.Repeat("#", int(p.Done*30)) + strings.Repeat(".", 30-int(p.Done*30))
					line := fmt.Sprintf("replay %s UTC [%s] %3.0f%%  %s: %s", p.Story.Format("2006-01-02 15:04"), bar, 100*p.Done, cfg.Country.Code, p.Country)
					if stderrIsTerminal() {
						fmt.Fprintf(a.stderr, "\r%-110s", line)
					} else if int(p.Done*1000)%50 < 3 {
						fmt.Fprintln(a.stderr, line)
					}
				}
				fmt.Fprintf(a.stderr, "bringing the lab up, registering %s, census, probers and correlator…\n", cfg.Country.Code)
				res, err := replay.Run(ctx, replay.Options{DB: url, Scenario: sc, Scale: factor, Lab: cfg, Keep: *keep,
					Progress: progress, Log: a.log})
				if stderrIsTerminal() {
					fmt.Fprintln(a.stderr)
				}
				if err != nil {
					return err
				}
				res.Write(a.stdout)

				// The report, on the story's clock.
				r, err := report.Build(ctx, st.Pool(), report.Options{Countries: []string{cfg.Country.Code},
					Since: res.Period.Start, Until: res.Period.End, Now: res.Period.End})
				if err != nil {
					return err
				}
				r.Warp(res.Story, res.Scale)
				var buf bytes.Buffer
				if err := report.WriteHTML(&buf, r); err != nil {
					return err
				}
				if err := writeFileAtomic(*out, buf.Bytes()); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "\nreport: %s\n", *out)
				if problems := res.Problems(*tolerance); len(problems) > 0 {
					return exitError{code: exitFailure, msg: "the replay fell short: " + strings.Join(problems, "; ")}
				}
				fmt.Fprintf(a.stdout, "verdict: all %d outages found within %.0f rounds of the truth; no false outage.\n", len(res.Matches), *tolerance)
				return nil
			}
		},
	}
}
