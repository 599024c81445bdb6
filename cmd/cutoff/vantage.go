package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cutoffnet/cutoff/store"
)

func vantageCmd() *command {
	return &command{
		name:    "vantage",
		summary: "see the vantage points",
		subs:    []*command{vantageListCmd()},
	}
}

func vantageListCmd() *command {
	return &command{
		name:    "list",
		summary: "list vantages: last contact, recent results, spool backlog, clock, health",
		help: `For each vantage: when it last reported, how many results it stored in
the last hour, the spool backlog it reported (results waiting on its disk
while the database was away), its clock offset against the database, and
its health as the correlator last judged it.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			db := dbFlag(fs)
			asJSON := fs.Bool("json", false, "print JSON")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				st, err := store.Open(ctx, *db)
				if err != nil {
					return err
				}
				defer st.Close()
				vs, err := st.Vantages(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					enc := json.NewEncoder(a.stdout)
					enc.SetIndent("", "  ")
					return enc.Encode(vs)
				}
				if len(vs) == 0 {
					fmt.Fprintln(a.stdout, "no vantages have reported yet")
					return nil
				}
				now := time.Now()
				tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "VANTAGE\tLAST CONTACT\tRESULTS/1H\tSPOOL\tCLOCK\tROUND\tHEALTH\tCOUNTRIES\tVERSION")
				for _, v := range vs {
					spool := "-"
					if v.SpoolRecords > 0 {
						spool = fmt.Sprintf("%d (%s)", v.SpoolRecords, bytesHuman(v.SpoolBytes))
						if v.SpoolOldest != nil {
							spool += fmt.Sprintf(", oldest %s ago", now.Sub(*v.SpoolOldest).Round(time.Second))
						}
					}
					clock := "-"
					if v.ClockOffset != nil {
						clock = fmt.Sprintf("%+.0fms", float64(*v.ClockOffset)/float64(time.Millisecond))
						if v.ClockOffset.Abs() > time.Second {
							clock += " (!)"
						}
					}
					health := v.Health
					if health == "" {
						health = "not judged yet"
					} else if v.HealthReason != "" {
						health += ": " + v.HealthReason
					}
					countries := strings.Join(v.Countries, ",")
					if countries == "" {
						countries = "all"
					}
					fmt.Fprintf(tw, "%s\t%s ago\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, now.Sub(v.LastSeen).Round(time.Second),
						v.ResultsLastHour, spool, clock, v.Round, health, countries, v.Version)
				}
				return tw.Flush()
			}
		},
	}
}

func bytesHuman(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
