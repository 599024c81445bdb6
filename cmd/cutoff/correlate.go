package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"time"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/alert"
	"github.com/cutoffnet/cutoff/store/correlate"
)

func correlateCmd() *command {
	return &command{
		name:    "correlate",
		summary: "derive block, network and country up/down intervals from what vantages saw",
		help: `Reads the verdicts and control-target results ingested since the last
pass (including results a vantage replays late), recomputes the affected
time window and writes block_intervals, network_intervals,
country_intervals and vantage_health. Without --follow it makes one pass
and exits (for cron); with --follow it keeps running and follows new
results within seconds. Re-running over the same data changes nothing.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			db := dbFlag(fs)
			follow := fs.Bool("follow", false, "keep running, making a pass every --interval")
			interval := fs.Duration("interval", 2*time.Second, "time between passes with --follow")
			from := fs.String("recompute-from", "", "recompute everything from this time (RFC 3339 or YYYY-MM-DD), whatever was done before")
			massShare := fs.Float64("mass-share", correlate.DefaultMassFailure.Share, "set a vantage aside when this share of its blocks outside the worst-hit country goes down at once, unless other vantages see them down too")
			massMin := fs.Int("mass-min", correlate.DefaultMassFailure.MinOthers, "...counting only when it probes at least this many such blocks")
			keepResults := fs.Duration("keep-results", 0, "drop raw probe results older than this (e.g. 2160h for 90 days; 0 keeps them)")
			keepVerdicts := fs.Duration("keep-verdicts", 0, "drop verdicts older than this (0 keeps them; keep them longer than results)")
			webhook := fs.String("webhook", "", "POST a JSON event to this URL when a country or network outage starts or ends (retried with backoff; never blocks correlation)")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if *interval <= 0 {
					return usagef("--interval must be positive")
				}
				if *webhook != "" {
					if u, err := url.Parse(*webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
						return usagef("--webhook %q: want an http(s) URL", *webhook)
					}
				}
				if *massShare <= 0 || *massShare > 1 {
					return usagef("--mass-share %v: want a share in (0, 1]", *massShare)
				}
				if *massMin < 1 {
					return usagef("--mass-min %d: want at least 1", *massMin)
				}
				if *keepResults < 0 || *keepVerdicts < 0 {
					return usagef("--keep-results and --keep-verdicts must not be negative")
				}
				var since time.Time
				if *from != "" {
					t, err := parseTime(*from)
					if err != nil {
						return usagef("--recompute-from: %v", err)
					}
					since = t
				}
				st, err := store.Open(ctx, *db)
				if err != nil {
					return err
				}
				defer st.Close()
				cfg := correlate.Config{
					Mass:         correlate.MassFailure{Share: *massShare, MinOthers: *massMin},
					Log:          a.log,
					KeepResults:  *keepResults,
					KeepVerdicts: *keepVerdicts,
				}
				var hook *alert.Webhook
				done := make(chan struct{})
				if *webhook != "" {
					hook = &alert.Webhook{URL: *webhook, Log: a.log}
					cfg.Events = hook.Notify
					hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
					go func() { hook.Run(hctx); close(done) }()
					defer func() {
						// Give queued events a moment to go out on exit.
						deadline := time.Now().Add(10 * time.Second)
						for time.Now().Before(deadline) {
							d, f, dr := hook.Stats()
							if d+f+dr == hook.Queued() {
								break
							}
							time.Sleep(50 * time.Millisecond)
						}
						cancel()
						<-done
					}()
				}
				c := correlate.New(st.Pool(), cfg)
				if !since.IsZero() {
					s, err := c.Recompute(ctx, since)
					if err != nil {
						return err
					}
					fmt.Fprintf(a.stdout, "recomputed from %s: %d keys, %d rows written, %d deleted in %s\n",
						since.Format(time.RFC3339), s.Keys, s.Inserted, s.Deleted, s.Elapsed.Round(time.Millisecond))
				}
				if *follow {
					a.log.Info("correlating", "interval", *interval)
					return c.Follow(ctx, *interval)
				}
				s, err := c.Pass(ctx)
				if err != nil {
					return err
				}
				if r, v, err := c.Prune(ctx, time.Now()); err != nil {
					return err
				} else if r+v > 0 {
					fmt.Fprintf(a.stdout, "dropped %d result and %d verdict partitions past their retention\n", r, v)
				}
				if s.Batches == 0 {
					fmt.Fprintln(a.stdout, "nothing new")
					return nil
				}
				fmt.Fprintf(a.stdout, "folded in %d batches (%d verdicts, %d control results) from %s to %s: %d rows written, %d deleted in %s\n",
					s.Batches, s.Observations, s.Controls, s.From.Format(time.RFC3339), s.Horizon.Format(time.RFC3339),
					s.Inserted, s.Deleted, s.Elapsed.Round(time.Millisecond))
				return nil
			}
		},
	}
}

// parseTime accepts RFC 3339 times and plain dates (UTC midnight).
func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02 15:04", time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (want e.g. 2014-12-22 or 2014-12-22T16:15:00Z)", s)
}
