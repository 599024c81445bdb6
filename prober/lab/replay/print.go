package replay

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

const stamp = "2006-01-02 15:04"

func secs(d time.Duration) string {
	if d.Abs() < 10*time.Second {
		return fmt.Sprintf("%+.1f s", d.Seconds())
	}
	return fmt.Sprintf("%+.0f s", d.Seconds())
}

// Write prints the derived outages side by side with the truth, on the
// story clock, then what happened around the vantage and network faults.
func (r *Result) Write(w io.Writer) {
	fmt.Fprintf(w, "\nCountry outages of %s, derived vs the lab's ground truth (%s clock, UTC; one round = %s of story time):\n\n",
		r.Country, r.Scenario, (time.Duration(float64(r.Round) * r.Scale)).Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TRUTH START\tTRUTH END\tDERIVED START\tDERIVED END\tSTART ERROR\tEND ERROR\tVANTAGES")
	for _, m := range r.Matches {
		if m.Derived == nil {
			fmt.Fprintf(tw, "%s\t%s\tMISSED\t\t\t\t\n", m.Truth.StoryStart.Format(stamp), m.Truth.StoryEnd.Format(stamp))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", m.Truth.StoryStart.Format(stamp), m.Truth.StoryEnd.Format(stamp),
			m.Derived.StoryStart.Format("2006-01-02 15:04:05"), m.Derived.StoryEnd.Format("2006-01-02 15:04:05"),
			secs(m.StartErr), secs(m.EndErr), m.Vantages)
	}
	for _, f := range r.False {
		fmt.Fprintf(tw, "(none)\t\t%s\t%s\tFALSE OUTAGE\t\t\n", f.StoryStart.Format("2006-01-02 15:04:05"), f.StoryEnd.Format("2006-01-02 15:04:05"))
	}
	tw.Flush()
	for _, v := range r.VantageFaults {
		verdict := "no country outage reported"
		if v.CountryOutage {
			verdict = "WRONGLY reported as a country outage"
		}
		aside := "and it was not judged unhealthy"
		if v.SetAside {
			aside = "it was judged unhealthy and its observations set aside"
		}
		fmt.Fprintf(w, "\n%s lost its own uplink %s to %s: %s; %s.\n", v.Vantage, v.Window.StoryStart.Format(stamp),
			v.Window.StoryEnd.Format(stamp), verdict, aside)
	}
	flaps := map[string][]NetworkFault{}
	var order []string
	for _, n := range r.Networks {
		k := n.Network.String() + " " + n.Fault
		if flaps[k] == nil {
			order = append(order, k)
		}
		flaps[k] = append(flaps[k], n)
	}
	for _, k := range order {
		fs := flaps[k]
		seen, country := 0, false
		for _, f := range fs {
			if f.Outages > 0 {
				seen++
			}
			country = country || f.CountryOutage
		}
		verdict := "not a country outage"
		if country {
			verdict = "WRONGLY also a country outage"
		}
		if len(fs) == 1 {
			what := "no network outage seen"
			if seen == 1 {
				what = "network outage seen"
			}
			fmt.Fprintf(w, "%s %s (%s to %s): %s; %s.\n", fs[0].Network, fs[0].Fault,
				fs[0].Window.StoryStart.Format(stamp), fs[0].Window.StoryEnd.Format(stamp), what, verdict)
			continue
		}
		fmt.Fprintf(w, "%s %s (%d times, %s to %s): network outages seen in %d of them; %s.\n", fs[0].Network, fs[0].Fault, len(fs),
			fs[0].Window.StoryStart.Format(stamp), fs[len(fs)-1].Window.StoryEnd.Format(stamp), seen, verdict)
	}
	if len(r.Unhealthy) > 0 {
		fmt.Fprintf(w, "\nVantage health: ")
		for i, h := range r.Unhealthy {
			if i > 0 {
				fmt.Fprint(w, "; ")
			}
			fmt.Fprintf(w, "%s unhealthy %s to %s (%s)", h.Vantage, h.Window.StoryStart.Format(stamp), h.Window.StoryEnd.Format(stamp), h.Reason)
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "\nVantage health: every vantage healthy throughout.")
	}
}

// Problems lists where the derived history falls short of the truth:
// outages missed or off by more than tolerance rounds, false outages,
// vantage faults blamed on the country.
func (r *Result) Problems(tolerance float64) []string {
	var out []string
	limit := time.Duration(tolerance * float64(r.Round) * r.Scale)
	for _, m := range r.Matches {
		switch {
		case m.Derived == nil:
			out = append(out, fmt.Sprintf("outage %s to %s missed", m.Truth.StoryStart.Format(stamp), m.Truth.StoryEnd.Format(stamp)))
		case m.StartErr.Abs() > limit || m.EndErr.Abs() > limit:
			out = append(out, fmt.Sprintf("outage %s to %s placed %s / %s off, over %.0f rounds (%s)",
				m.Truth.StoryStart.Format(stamp), m.Truth.StoryEnd.Format(stamp), secs(m.StartErr), secs(m.EndErr), tolerance, limit))
		}
	}
	for _, f := range r.False {
		out = append(out, fmt.Sprintf("false country outage %s to %s", f.StoryStart.Format(stamp), f.StoryEnd.Format(stamp)))
	}
	for _, v := range r.VantageFaults {
		if v.CountryOutage {
			out = append(out, fmt.Sprintf("%s's own uplink cut reported as a country outage", v.Vantage))
		}
	}
	for _, n := range r.Networks {
		if n.CountryOutage {
			out = append(out, fmt.Sprintf("%s %s reported as a country outage", n.Network, n.Fault))
		}
	}
	return out
}
