package report_test

import (
	"context"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/store/report"
)

// chromium finds a headless browser, or skips (fails in CI, where
// CUTOFF_REQUIRE_CHROMIUM=1 says it must be there).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CUTOFF_REQUIRE_CHROMIUM") == "1" {
		t.Fatal("no chromium on PATH (apt-get install chromium), and CUTOFF_REQUIRE_CHROMIUM=1")
	}
	t.Skip("no chromium on PATH (apt-get install chromium)")
	return ""
}

// screenshot renders a page in headless Chromium and returns the image.
func screenshot(t *testing.T, page string) image.Image {
	t.Helper()
	bin := chromium(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "shot.png")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--window-size=1100,2400", "--screenshot="+out, "file://"+page)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func near(c color.Color, hex string) bool {
	r, g, b, _ := c.RGBA()
	var want [3]uint32
	for i := range 3 {
		var v uint32
		for _, ch := range hex[1+2*i : 3+2*i] {
			v *= 16
			switch {
			case ch >= '0' && ch <= '9':
				v += uint32(ch - '0')
			default:
				v += uint32(ch-'a') + 10
			}
		}
		want[i] = v
	}
	d := func(a, b uint32) uint32 {
		if a > b {
			return a - b
		}
		return b - a
	}
	return d(r>>8, want[0]) < 12 && d(g>>8, want[1]) < 12 && d(b>>8, want[2]) < 12
}

// TestHTMLTimelineRenders opens the HTML report of KP and IR in headless
// Chromium and looks at the pixels: the bands are there, in their
// colours, the long outage of 22 December sits where its time says on
// the axis, and so does IR's stretch of unknown state.
func TestHTMLTimelineRenders(t *testing.T) {
	t.Parallel()
	st := fixture(t)
	r := build(t, st, report.Options{Countries: []string{"KP", "IR"}, Since: since, Until: until, Now: until})
	page := filepath.Join(t.TempDir(), "report.html")
	if err := os.WriteFile(page, render(t, r, "html"), 0o644); err != nil {
		t.Fatal(err)
	}
	img := screenshot(t, page)
	if os.Getenv("CUTOFF_KEEP_SCREENSHOT") != "" {
		f, _ := os.Create(os.Getenv("CUTOFF_KEEP_SCREENSHOT"))
		png.Encode(f, img)
		f.Close()
	}

	b := img.Bounds()
	count := map[string]int{}
	// The plot's horizontal extent, from the up bands, and each row's
	// down runs.
	left, right := b.Max.X, b.Min.X
	type run struct{ y, x0, x1 int }
	// The longest horizontal run of a colour: a band, not a legend swatch.
	longestRun := func(hex string) run {
		var longest run
		for y := b.Min.Y; y < b.Max.Y; y++ {
			x0 := -1
			for x := b.Min.X; x <= b.Max.X; x++ {
				in := x < b.Max.X && near(img.At(x, y), hex)
				switch {
				case in && x0 < 0:
					x0 = x
				case !in && x0 >= 0:
					if x-x0 > longest.x1-longest.x0 {
						longest = run{y, x0, x}
					}
					x0 = -1
				}
			}
		}
		return longest
	}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := img.At(x, y)
			for name, hex := range map[string]string{"up": "#4daf7c", "partial": "#f4a641", "down": "#c1272d", "unknown": "#bdbdbd", "healthy": "#a6cee3", "unhealthy": "#6a3d9a"} {
				if near(c, hex) {
					count[name]++
				}
			}
		}
	}
	for _, s := range []string{"up", "partial", "down", "unknown", "healthy", "unhealthy"} {
		if count[s] < 20 {
			t.Errorf("%s band: %d pixels in the screenshot, want it drawn", s, count[s])
		}
	}
	longest := longestRun("#c1272d")
	// The plot's extent is that of the bands in the row of the longest
	// outage (the legend's swatches lie elsewhere).
	for x := b.Min.X; x < b.Max.X; x++ {
		if c := img.At(x, longest.y); near(c, "#4daf7c") || near(c, "#c1272d") {
			left, right = min(left, x), max(right, x+1)
		}
	}
	if right <= left {
		t.Fatal("no plot found in the screenshot")
	}
	outage := time.Date(2014, 12, 22, 16, 15, 4, 0, time.UTC)
	want := float64(outage.Sub(since)) / float64(until.Sub(since))
	got := float64(longest.x0-left) / float64(right-left)
	t.Logf("plot x %d..%d, longest down band x %d..%d at y %d: starts at %.3f of the axis, want %.3f", left, right, longest.x0, longest.x1, longest.y, got, want)
	if got < want-0.01 || got > want+0.01 {
		t.Fatalf("the long outage starts at %.3f of the axis, want %.3f", got, want)
	}
	wantLen := float64(9*time.Hour+31*time.Minute) / float64(until.Sub(since))
	if gotLen := float64(longest.x1-longest.x0) / float64(right-left); gotLen < wantLen-0.01 || gotLen > wantLen+0.01 {
		t.Fatalf("the long outage spans %.3f of the axis, want %.3f", gotLen, wantLen)
	}

	// IR's unknown stretch, grey, on the same axis (every timeline of a
	// report shares the period and the layout).
	unknown := longestRun("#bdbdbd")
	from, to := time.Date(2014, 12, 22, 2, 0, 20, 0, time.UTC), time.Date(2014, 12, 22, 5, 30, 10, 0, time.UTC)
	wantAt, wantLen := float64(from.Sub(since))/float64(until.Sub(since)), float64(to.Sub(from))/float64(until.Sub(since))
	gotAt, gotLen := float64(unknown.x0-left)/float64(right-left), float64(unknown.x1-unknown.x0)/float64(right-left)
	t.Logf("longest unknown band x %d..%d at y %d: starts at %.3f of the axis, spans %.3f", unknown.x0, unknown.x1, unknown.y, gotAt, gotLen)
	if gotAt < wantAt-0.01 || gotAt > wantAt+0.01 || gotLen < wantLen-0.01 || gotLen > wantLen+0.01 {
		t.Fatalf("IR's unknown band starts at %.3f and spans %.3f of the axis, want %.3f and %.3f", gotAt, gotLen, wantAt, wantLen)
	}
	if unknown.y <= longest.y {
		t.Fatalf("the unknown band (y %d) is not in IR's timeline, below KP's (y %d)", unknown.y, longest.y)
	}
}
