package report

import (
	"fmt"
	"html"
	"html/template"
	"io"
	"strings"
	"time"
)

// Colours of the timeline's bands, chosen to stay apart for the common
// forms of colour blindness and in greyscale print (up light, down dark).
var colours = map[string]string{
	"up":        "#4daf7c",
	"partial":   "#f4a641",
	"down":      "#c1272d",
	"unknown":   "#bdbdbd",
	"healthy":   "#a6cee3",
	"unhealthy": "#6a3d9a",
}

const (
	svgWidth   = 1000
	labelWidth = 200
	plotWidth  = 770
	rowHeight  = 26
	bandHeight = 18
)

// timeline draws one country's SVG: a row per network, the country's row,
// and a row per vantage's health beneath, on a shared time axis.
func timeline(r *Report, c Country) template.HTML {
	type rowSpec struct {
		label, sub string
		ivs        []Interval
		bold       bool
	}
	var rows []rowSpec
	for _, n := range c.Networks {
		sub := ""
		if n.ASN != 0 {
			sub = fmt.Sprintf("AS%d", n.ASN)
		}
		rows = append(rows, rowSpec{label: n.Prefix, sub: sub, ivs: n.Intervals})
	}
	rows = append(rows, rowSpec{label: title(c), sub: "country", ivs: c.Intervals, bold: true})
	nPlace := len(rows)
	for _, v := range r.Vantages {
		rows = append(rows, rowSpec{label: v.Name, sub: "vantage health", ivs: v.Intervals})
	}

	top := 10
	axisY := top + len(rows)*rowHeight + 8
	height := axisY + 40
	span := r.Until.Sub(r.Since)
	x := func(t time.Time) float64 {
		return float64(labelWidth) + float64(plotWidth)*float64(t.Sub(r.Since))/float64(span)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 %d %d" width="100%%" role="img" aria-label="%s timeline">`,
		svgWidth, height, html.EscapeString(title(c)))
	for i, row := range rows {
		y := top + i*rowHeight
		if i == nPlace {
			// A rule between the country's rows and the vantages'.
			fmt.Fprintf(&b, `<line x1="0" x2="%d" y1="%d" y2="%d" stroke="#888" stroke-dasharray="4 3"/>`, svgWidth, y-2, y-2)
		}
		weight := "normal"
		if row.bold {
			weight = "bold"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" font-weight="%s" text-anchor="end">%s</text>`,
			labelWidth-8, y+bandHeight/2+1, weight, html.EscapeString(row.label))
		if row.sub != "" {
			fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="9" fill="#666" text-anchor="end">%s</text>`,
				labelWidth-8, y+bandHeight/2+11, html.EscapeString(row.sub))
		}
		// No data at all is white with an outline, not a colour.
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="#fff" stroke="#ddd"/>`, labelWidth, y, plotWidth, bandHeight)
		for _, iv := range row.ivs {
			x0, x1 := x(iv.Start), x(iv.End)
			w := x1 - x0
			if w < 1 {
				w = 1 // a short outage stays visible
			}
			end := iv.End.Format(stamp)
			if iv.Open {
				end += " (ongoing)"
			}
			fmt.Fprintf(&b, `<rect class="band" data-state="%s" x="%.2f" y="%d" width="%.2f" height="%d" fill="%s"><title>%s: %s %s to %s (%s)</title></rect>`,
				iv.State, x0, y, w, bandHeight, colours[iv.State], html.EscapeString(row.label), iv.State, iv.Start.Format(stamp), end, dur(iv.End.Sub(iv.Start)))
		}
	}
	// The time axis.
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>`, labelWidth, labelWidth+plotWidth, axisY, axisY)
	step, layout := tickStep(span)
	for t := r.Since.Truncate(step); !t.After(r.Until); t = t.Add(step) {
		if t.Before(r.Since) {
			continue
		}
		tx := x(t)
		fmt.Fprintf(&b, `<line x1="%.2f" x2="%.2f" y1="%d" y2="%d" stroke="#333"/>`, tx, tx, axisY, axisY+5)
		fmt.Fprintf(&b, `<line x1="%.2f" x2="%.2f" y1="%d" y2="%d" stroke="#000" stroke-opacity="0.08"/>`, tx, tx, top, axisY)
		fmt.Fprintf(&b, `<text x="%.2f" y="%d" font-size="10" text-anchor="middle">%s</text>`, tx, axisY+17, t.Format(layout))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="10" text-anchor="end" fill="#666">UTC</text>`, labelWidth+plotWidth, axisY+32)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// tickStep picks a round step giving 4 to 12 ticks across the span.
func tickStep(span time.Duration) (time.Duration, string) {
	for _, s := range []struct {
		d      time.Duration
		layout string
	}{
		{time.Minute, "15:04"}, {5 * time.Minute, "15:04"}, {15 * time.Minute, "15:04"}, {30 * time.Minute, "15:04"},
		{time.Hour, "15:04"}, {3 * time.Hour, "01-02 15:04"}, {6 * time.Hour, "01-02 15:04"}, {12 * time.Hour, "01-02 15:04"},
		{24 * time.Hour, "2006-01-02"}, {7 * 24 * time.Hour, "2006-01-02"}, {30 * 24 * time.Hour, "2006-01-02"},
	} {
		if span/s.d <= 12 {
			return s.d, s.layout
		}
	}
	return 365 * 24 * time.Hour, "2006"
}

var page = template.Must(template.New("report").Funcs(template.FuncMap{
	"timeline":     timeline,
	"title":        title,
	"summary":      summaryLine,
	"outages":      outageLine,
	"when":         when,
	"endOf":        endOf,
	"dur":          dur,
	"pct":          pct,
	"scope":        scopeOf,
	"stamp":        func(t time.Time) string { return t.Format(stamp) },
	"colour":       func(s string) template.CSS { return template.CSS(colours[s]) },
	"header":       header,
	"unknowns":     unknowns,
	"untilOf":      untilOf,
	"singles":      singleNetworkOutages,
	"unknownTitle": func() string { return unknownTitle },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{header .R}}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1040px; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
caption { text-align: left; font-weight: bold; padding-bottom: 0.3em; }
.legend span { display: inline-block; margin-right: 1.2em; font-size: 0.85em; }
.legend i { display: inline-block; width: 1.4em; height: 0.9em; vertical-align: middle; margin-right: 0.3em; border: 1px solid #999; }
.ongoing { color: #c1272d; font-weight: bold; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  h2 { break-before: auto; }
  svg, table { break-inside: avoid; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
</style>
</head>
<body>
<h1>{{header .R}}</h1>
<p class="legend">
{{range $s := .States}}<span><i style="background: {{colour $s}}"></i>{{$s}}</span>{{end}}
<span><i style="background: #fff"></i>no data</span>
</p>
{{$r := .}}
{{range .Countries}}
<h2>{{title .}}</h2>
<p>{{.Blocks}} blocks in {{len .Networks}} networks. {{summary .Summary}}.
{{if .Summary.Ongoing}}<span class="ongoing">{{outages .Summary}}.</span>{{else}}{{outages .Summary}}.{{end}}</p>
{{timeline $r.R .}}
{{if .Outages}}
<table>
<caption>Outages</caption>
<tr><th>Start (UTC)</th><th>End (UTC)</th><th>Duration</th><th>Scope</th><th>Vantages</th></tr>
{{$c := .}}{{range .Outages}}<tr><td>{{when .Start}}</td><td>{{endOf .}}</td><td>{{dur .Duration}}</td><td>{{scope . $c}}</td><td>{{.Vantages}}</td></tr>
{{end}}</table>
{{end}}
{{with unknowns .Intervals}}
<p>{{unknownTitle}}:</p>
<ul>
{{range .}}<li>{{stamp .Start}} to {{untilOf .}} ({{dur (.End.Sub .Start)}})</li>
{{end}}</ul>
{{end}}
<table>
<caption>Networks</caption>
<tr><th>Network</th><th>AS</th><th>Availability</th><th>Outages</th><th>Longest</th></tr>
{{range .Networks}}<tr><td>{{.Prefix}}</td><td>{{if .ASN}}AS{{.ASN}}{{end}}</td><td>{{if .Summary.Measured}}{{pct .Summary.Availability}}{{else}}not measured{{end}}{{if .Summary.Unknown}}, unknown {{dur .Summary.Unknown}}{{end}}</td><td>{{.Summary.Outages}}</td><td>{{dur .Summary.Longest}}</td></tr>
{{end}}</table>
{{with singles .}}
<table class="singles">
<caption>Outages of single networks</caption>
<tr><th>Network</th><th>Start (UTC)</th><th>End (UTC)</th><th>Duration</th></tr>
{{range .}}<tr><td>{{.Prefix}}</td><td>{{when .Start}}</td><td>{{endOf .Outage}}</td><td>{{dur .Duration}}</td></tr>
{{end}}</table>
{{end}}
{{end}}
<h2>Vantage health</h2>
{{if not .Vantages}}<p>No vantages.</p>{{end}}
<ul>
{{range .Vantages}}<li><b>{{.Name}}</b>: {{if .Periods}}unhealthy for {{dur .Unhealthy}}; its observations then were set aside.
<ul>{{range .Periods}}<li>{{stamp .Start}} to {{if .End}}{{stamp .End}}{{else}}ongoing{{end}}: {{.Reason}}</li>{{end}}</ul>{{else}}healthy throughout.{{end}}</li>
{{end}}</ul>
<p style="font-size: 0.8em; color: #666">Generated {{stamp .Generated}} UTC by cutoff. Times are the middle of the bracket between the last observation of the old state and the first of the new; ± is half its width.</p>
</body>
</html>
`))

// WriteHTML renders a self-contained page: no scripts, no external
// resources, an SVG timeline per country; it prints legibly.
func WriteHTML(w io.Writer, r *Report) error {
	return page.Execute(w, struct {
		*Report
		R      *Report
		States []string
	}{r, r, []string{"up", "partial", "down", "unknown", "healthy", "unhealthy"}})
}
