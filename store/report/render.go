package report

import (
	_ "embed"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Formats lists what Write can render.
var Formats = []string{"text", "markdown", "csv", "json", "html"}

// Write renders r in the named format.
func Write(w io.Writer, r *Report, format string) error {
	switch format {
	case "text":
		return WriteText(w, r)
	case "markdown", "md":
		return WriteMarkdown(w, r)
	case "csv":
		return WriteCSV(w, r)
	case "json":
		return WriteJSON(w, r)
	case "html":
		return WriteHTML(w, r)
	}
	return fmt.Errorf("unknown format %q (want %s)", format, strings.Join(Formats, ", "))
}

const stamp = "2006-01-02 15:04:05"

// dur renders a duration compactly: 9h31m08s, 45s, 0s.
func dur(d time.Duration) string {
	d = d.Round(time.Second)
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	if h == 0 {
		return fmt.Sprintf("%dm%02ds", m, s)
	}
	return fmt.Sprintf("%dh%02dm%02ds", h, m, s)
}

func pct(f float64) string { return fmt.Sprintf("%.2f%%", 100*f) }

func when(s Span) string {
	u := s.Uncertainty().Round(time.Second)
	return fmt.Sprintf("%s ±%s", s.At.Format(stamp), dur(u))
}

func endOf(o Outage) string {
	if o.End == nil {
		return "ongoing"
	}
	return when(*o.End)
}

func scopeOf(o Outage, c Country) string {
	if o.Scope == "country" {
		return "whole country"
	}
	return strings.Join(o.Networks, ", ")
}

func title(c Country) string {
	if c.Name != "" {
		return c.Code + " " + c.Name
	}
	return c.Code
}

func header(r *Report) string {
	s := fmt.Sprintf("cutoff report: %s to %s UTC", r.Since.Format("2006-01-02 15:04"), r.Until.Format("2006-01-02 15:04"))
	if r.Horizon != nil {
		s += fmt.Sprintf(" (data as of %s UTC)", r.Horizon.Format("2006-01-02 15:04:05"))
	} else {
		s += " (no data correlated yet)"
	}
	return s
}

func summaryLine(s Summary) string {
	unknown := ""
	if s.Unknown > 0 {
		unknown = fmt.Sprintf("; unknown %s", dur(s.Unknown))
	}
	if s.Measured == 0 {
		if unknown != "" {
			return fmt.Sprintf("no measurements in this period (state unknown for %s)", dur(s.Unknown))
		}
		return "no measurements in this period"
	}
	return fmt.Sprintf("availability %s (measured %s: up %s, partial %s, down %s%s)",
		pct(s.Availability), dur(s.Measured), dur(s.Up), dur(s.Partial), dur(s.Down), unknown)
}

// unknownTitle heads the list of a country's unknown stretches.
const unknownTitle = "State unknown (too few blocks measurable to judge)"

// unknowns lists the stretches when a country's state could not be
// judged, so a reader does not take a gap for good news.
func unknowns(ivs []Interval) []Interval {
	var out []Interval
	for _, iv := range ivs {
		if iv.State == "unknown" {
			out = append(out, iv)
		}
	}
	return out
}

func untilOf(iv Interval) string {
	if iv.Open {
		return "now"
	}
	return iv.End.Format(stamp)
}

func outageLine(s Summary) string {
	ongoing := "none ongoing"
	if s.Ongoing {
		ongoing = "ONE ONGOING"
	}
	return fmt.Sprintf("%d outages, total downtime %s, longest %s; %s", s.Outages, dur(s.Down), dur(s.Longest), ongoing)
}

// WriteText renders a report for a terminal or an email.
func WriteText(w io.Writer, r *Report) error {
	fmt.Fprintln(w, header(r))
	for _, c := range r.Countries {
		fmt.Fprintf(w, "\n%s: %d blocks in %d networks\n", title(c), c.Blocks, len(c.Networks))
		fmt.Fprintf(w, "  %s\n  %s\n", summaryLine(c.Summary), outageLine(c.Summary))
		if len(c.Outages) > 0 {
			fmt.Fprintln(w, "\n  Outages")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "    START (UTC)\tEND (UTC)\tDURATION\tSCOPE\tVANTAGES")
			for _, o := range c.Outages {
				fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%d\n", when(o.Start), endOf(o), dur(o.Duration), scopeOf(o, c), o.Vantages)
			}
			tw.Flush()
		}
		if u := unknowns(c.Intervals); len(u) > 0 {
			fmt.Fprintf(w, "\n  %s\n", unknownTitle)
			for _, iv := range u {
				fmt.Fprintf(w, "    %s to %s (%s)\n", iv.Start.Format(stamp), untilOf(iv), dur(iv.End.Sub(iv.Start)))
			}
		}
		if len(c.Networks) > 0 {
			fmt.Fprintln(w, "\n  Networks")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			for _, n := range c.Networks {
				asn := ""
				if n.ASN != 0 {
					asn = fmt.Sprintf("AS%d", n.ASN)
				}
				avail := "not measured"
				if n.Summary.Measured > 0 {
					avail = "availability " + pct(n.Summary.Availability)
				}
				if n.Summary.Unknown > 0 {
					avail += ", unknown " + dur(n.Summary.Unknown)
				}
				fmt.Fprintf(tw, "    %s\t%s\t%s\t%d outages, longest %s\n", n.Prefix, asn, avail, n.Summary.Outages, dur(n.Summary.Longest))
			}
			tw.Flush()
			for _, o := range singleNetworkOutages(c) {
				fmt.Fprintf(w, "      %s down %s to %s (%s)\n", o.Prefix, when(o.Start), endOf(o.Outage), dur(o.Duration))
			}
		}
	}
	fmt.Fprintln(w, "\nVantage health")
	if len(r.Vantages) == 0 {
		fmt.Fprintln(w, "  no vantages")
	}
	for _, v := range r.Vantages {
		if len(v.Periods) == 0 {
			fmt.Fprintf(w, "  %s: healthy throughout\n", v.Name)
			continue
		}
		fmt.Fprintf(w, "  %s: unhealthy for %s; its observations then were set aside\n", v.Name, dur(v.Unhealthy))
		for _, h := range v.Periods {
			end := "ongoing"
			if h.End != nil {
				end = h.End.Format(stamp)
			}
			fmt.Fprintf(w, "    %s to %s: %s\n", h.Start.Format(stamp), end, h.Reason)
		}
	}
	return nil
}

// netOutage is an outage of one network of a country.
type netOutage struct {
	Prefix string
	Outage
}

// singleNetworkOutages lists, network by network, the outages that were
// not part of a country-wide outage: the news a reader looks for per
// network (the country-wide ones are listed once, as the country's).
func singleNetworkOutages(c Country) []netOutage {
	var out []netOutage
	for _, n := range c.Networks {
		for _, o := range networkOnly(n, c) {
			out = append(out, netOutage{n.Prefix, o})
		}
	}
	return out
}

// networkOnly lists a network's outages that were not part of a
// country-wide outage.
func networkOnly(n Network, c Country) []Outage {
	var out []Outage
	for _, o := range n.Outages {
		inCountry := false
		for _, co := range c.Outages {
			coEnd := time.Time{}
			if co.End != nil {
				coEnd = co.End.At
			}
			oEnd := time.Time{}
			if o.End != nil {
				oEnd = o.End.At
			}
			if co.Scope == "country" && !o.Start.At.Before(co.Start.At) && (co.End == nil || (o.End != nil && !oEnd.After(coEnd))) {
				inCountry = true
				break
			}
		}
		if !inCountry {
			out = append(out, o)
		}
	}
	return out
}

// WriteMarkdown renders a report as Markdown (for a wiki, an issue or an
// email that renders it).
func WriteMarkdown(w io.Writer, r *Report) error {
	fmt.Fprintf(w, "# %s\n", header(r))
	for _, c := range r.Countries {
		fmt.Fprintf(w, "\n## %s\n\n%d blocks in %d networks. %s. %s.\n", title(c), c.Blocks, len(c.Networks),
			summaryLine(c.Summary), outageLine(c.Summary))
		if len(c.Outages) > 0 {
			fmt.Fprintf(w, "\n| Start (UTC) | End (UTC) | Duration | Scope | Vantages |\n|---|---|---|---|---|\n")
			for _, o := range c.Outages {
				fmt.Fprintf(w, "| %s | %s | %s | %s | %d |\n", when(o.Start), endOf(o), dur(o.Duration), scopeOf(o, c), o.Vantages)
			}
		}
		if u := unknowns(c.Intervals); len(u) > 0 {
			fmt.Fprintf(w, "\n%s:\n\n", unknownTitle)
			for _, iv := range u {
				fmt.Fprintf(w, "- %s to %s (%s)\n", iv.Start.Format(stamp), untilOf(iv), dur(iv.End.Sub(iv.Start)))
			}
		}
		if len(c.Networks) > 0 {
			fmt.Fprintf(w, "\n| Network | AS | Availability | Outages | Longest |\n|---|---|---|---|---|\n")
			for _, n := range c.Networks {
				asn := ""
				if n.ASN != 0 {
					asn = fmt.Sprintf("AS%d", n.ASN)
				}
				avail := "not measured"
				if n.Summary.Measured > 0 {
					avail = pct(n.Summary.Availability)
				}
				if n.Summary.Unknown > 0 {
					avail += ", unknown " + dur(n.Summary.Unknown)
				}
				fmt.Fprintf(w, "| %s | %s | %s | %d | %s |\n", n.Prefix, asn, avail, n.Summary.Outages, dur(n.Summary.Longest))
			}
			if singles := singleNetworkOutages(c); len(singles) > 0 {
				fmt.Fprintf(w, "\nOutages of single networks:\n\n")
				for _, o := range singles {
					fmt.Fprintf(w, "- %s down %s to %s (%s)\n", o.Prefix, when(o.Start), endOf(o.Outage), dur(o.Duration))
				}
			}
		}
	}
	fmt.Fprintf(w, "\n## Vantage health\n\n")
	if len(r.Vantages) == 0 {
		fmt.Fprintln(w, "No vantages.")
	}
	for _, v := range r.Vantages {
		if len(v.Periods) == 0 {
			fmt.Fprintf(w, "- **%s**: healthy throughout\n", v.Name)
			continue
		}
		fmt.Fprintf(w, "- **%s**: unhealthy for %s (observations set aside)\n", v.Name, dur(v.Unhealthy))
		for _, h := range v.Periods {
			end := "ongoing"
			if h.End != nil {
				end = h.End.Format(stamp)
			}
			fmt.Fprintf(w, "  - %s to %s: %s\n", h.Start.Format(stamp), end, h.Reason)
		}
	}
	return nil
}

// WriteCSV writes one row per interval: countries', networks' and
// vantages' health, clipped to the period.
func WriteCSV(w io.Writer, r *Report) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"kind", "key", "country", "state", "start", "end", "open", "duration_s"})
	row := func(kind, key, country string, iv Interval) {
		cw.Write([]string{kind, key, country, iv.State, iv.Start.Format(time.RFC3339), iv.End.Format(time.RFC3339),
			fmt.Sprint(iv.Open), fmt.Sprintf("%.0f", iv.End.Sub(iv.Start).Seconds())})
	}
	for _, c := range r.Countries {
		for _, iv := range c.Intervals {
			row("country", c.Code, c.Code, iv)
		}
		for _, n := range c.Networks {
			for _, iv := range n.Intervals {
				row("network", n.Prefix, c.Code, iv)
			}
		}
	}
	for _, v := range r.Vantages {
		for _, iv := range v.Intervals {
			row("vantage", v.Name, "", iv)
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteJSON writes the report as JSON (schema: Schema, version field).
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// Schema is the JSON Schema of WriteJSON's output.
//
//go:embed schema.json
var Schema []byte
