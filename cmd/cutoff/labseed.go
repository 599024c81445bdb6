package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cutoffnet/cutoff/prober/lab/labdb"
	"github.com/cutoffnet/cutoff/store"
)

func labSeedCmd() *command {
	return &command{
		name:    "seed",
		summary: "register the lab's country in the database, and census it from a vantage",
		help: `Does for the lab what an operator does for a real country: imports its
networks (cutoff targets import), adds the control targets and the
networks' DNS servers (cutoff targets add), and, unless --census=false,
runs a census from a vantage (cutoff targets discover) so that probers can
start. Seeding twice changes nothing but the census history.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			lf := addLabFlags(fs)
			db := dbFlag(fs)
			census := fs.Bool("census", true, "run a census of the country from --vantage")
			vantage := fs.String("vantage", "vp1", "vantage to run the census from")
			ports := fs.String("ports", "80,443", "TCP ports the census tries on every address")
			timeout := fs.Duration("timeout", 500*time.Millisecond, "probe timeout of the census (the lab answers in microseconds)")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				var ps []uint16
				for _, p := range strings.Split(*ports, ",") {
					if p = strings.TrimSpace(p); p == "" {
						continue
					}
					n, err := strconv.ParseUint(p, 10, 16)
					if err != nil || n == 0 {
						return usagef("--ports: %q is not a port", p)
					}
					ps = append(ps, uint16(n))
				}
				l, err := lf.attach()
				if err != nil {
					return err
				}
				defer l.Close()
				st, err := store.Open(ctx, *db)
				if err != nil {
					return err
				}
				defer st.Close()
				if err := labdb.Seed(ctx, l, st); err != nil {
					return err
				}
				c := l.Country()
				fmt.Fprintf(a.stdout, "%s (%s): %d networks, %d control targets registered\n", c.Code, c.Name, len(c.Networks), len(l.ControlTargets()))
				if !*census {
					return nil
				}
				s, err := labdb.Census(ctx, l, st, *vantage, ps, *timeout)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "census from %s: %d blocks, %d with responsive addresses, %d new targets\n", *vantage, s.Blocks, s.Responsive, s.New)
				return nil
			}
		},
	}
}
