package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/report"
)

func reportCmd() *command {
	return &command{
		name:    "report",
		summary: "report outages, availability and vantage health over a period",
		help: `Summarises a period of derived history for one or more countries:
availability, outages (start and end with their uncertainty, duration,
scope, vantages that saw them), each network's own outages, and vantage
health. Formats: text, markdown, csv (one row per interval), json
(versioned schema: cutoff report --schema) and html (a self-contained page
with an SVG timeline). With --fail-on-outage the exit code is 3 when an
outage is ongoing, for cron and monitoring.

Examples:
  cutoff report --country KP --since 24h
  cutoff report --country KP --since 2014-12-21 --until 2014-12-24 --format html --out kp.html
  cutoff report --all --format json --fail-on-outage`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			db := dbFlag(fs)
			var countries stringList
			fs.Var(&countries, "country", "country codes, comma-separated or repeated (e.g. KP,IR)")
			all := fs.Bool("all", false, "every watched country")
			since := fs.String("since", "24h", "start: a duration back from now (24h, 7d), a date (2014-12-22) or a time")
			until := fs.String("until", "", "end, in the same forms (default now)")
			format := fs.String("format", "text", "output format: "+strings.Join(report.Formats, ", "))
			out := fs.String("out", "", "write to this file instead of standard output")
			failOn := fs.Bool("fail-on-outage", false, "exit with code 3 when an outage is ongoing")
			schema := fs.Bool("schema", false, "print the JSON output's schema and exit")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if *schema {
					_, err := a.stdout.Write(report.Schema)
					return err
				}
				if !slices.Contains(report.Formats, *format) && *format != "md" {
					return usagef("--format %q: want one of %s", *format, strings.Join(report.Formats, ", "))
				}
				if *all == (len(countries) > 0) {
					return usagef("give --country CC[,CC…] or --all")
				}
				var codes []string
				for _, c := range countries {
					c = strings.ToUpper(c)
					if err := store.CheckCountry(c); err != nil {
						return badInput(fmt.Errorf("--country: %w", err))
					}
					if !slices.Contains(codes, c) {
						codes = append(codes, c)
					}
				}
				now := time.Now().UTC()
				from, err := report.ParsePeriod(*since, now)
				if err != nil {
					return usagef("--since: %v", err)
				}
				to, err := report.ParsePeriod(*until, now)
				if err != nil {
					return usagef("--until: %v", err)
				}
				if !to.IsZero() && !from.Before(to) {
					return usagef("--since must be before --until")
				}
				// The period ends now at the latest: a --since in the
				// future leaves nothing to report.
				if !from.Before(now) {
					return usagef("--since %s is in the future (now is %s)", from.Format(time.RFC3339), now.Format(time.RFC3339))
				}
				st, err := store.Open(ctx, *db)
				if err != nil {
					return err
				}
				defer st.Close()
				r, err := report.Build(ctx, st.Pool(), report.Options{Countries: codes, All: *all, Since: from, Until: to, Now: now})
				if errors.Is(err, report.ErrNoData) {
					return badInput(err)
				}
				if err != nil {
					return err
				}
				var buf bytes.Buffer
				if err := report.Write(&buf, r, *format); err != nil {
					return err
				}
				if *out == "" {
					if _, err := a.stdout.Write(buf.Bytes()); err != nil {
						return err
					}
				} else if err := writeFileAtomic(*out, buf.Bytes()); err != nil {
					return err
				}
				if *failOn && r.Ongoing() {
					return exitError{code: exitOutage, msg: "an outage is ongoing"}
				}
				return nil
			}
		},
	}
}

// writeFileAtomic writes through a temporary file and a rename, so a
// reader (a web server, a mailer) never sees half a report, and a failed
// write leaves nothing behind.
func writeFileAtomic(path string, data []byte) error {
	fail := func(err error) error {
		// The cause, not the temporary file's name: that would only
		// puzzle the reader.
		var pe *fs.PathError
		var le *os.LinkError
		switch {
		case errors.As(err, &pe):
			err = pe.Err
		case errors.As(err, &le):
			err = le.Err
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		// A rename onto a directory fails with "file exists".
		return fmt.Errorf("write %s: is a directory", path)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fail(err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fail(err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fail(err)
	}
	return nil
}
