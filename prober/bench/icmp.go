//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
)

// DefaultRange is the AnyIP range of the benchmark lab: a /16 of which
// every address answers echo. fping numbers its probes with 16 bits and
// refuses to reuse a number within 10 s, so a sweep of one pass is at
// most 65,535 probes: a /16 without its ends.
var DefaultRange = netip.MustParsePrefix("198.19.0.0/16")

// Tools are the tools the ICMP benchmark compares, cutoff first.
var Tools = []string{"cutoff", "zmap", "fping"}

// LabConfig is the benchmark lab: the default lab (two vantages, a
// transit, a border and a country) whose country answers echo on every
// address of rng, with the country's networks moved out of its way.
func LabConfig(rng netip.Prefix) (lab.Config, error) {
	cfg := lab.Default()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return cfg, err
	}
	cfg.Prefix = "cutoffbench-" + hex.EncodeToString(b[:])
	cfg.Country.AnyIP = rng
	for i, n := range cfg.Country.Networks {
		if n.Prefix.Overlaps(rng) {
			// 198.18.64.0/22 holds nothing else in the default lab.
			cfg.Country.Networks[i].Prefix = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(64 + i), 0}), 24)
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("bench lab for %s: %w", rng, err)
	}
	return cfg, nil
}

// ICMP compares cutoff's ICMP engine with zmap and fping: each tool, at
// each rate, sweeps the lab country's AnyIP range once from one vantage,
// in a process of its own inside the vantage's namespace. What each sent
// is counted on the wire (the vantage's link), what the country answered
// by the country's kernel (Icmp OutEchoReps), what each matched from its
// own output, and its CPU time from its rusage.
type ICMP struct {
	// Lab is up, with the country's AnyIP range set (LabConfig).
	Lab *lab.Lab
	// Vantage probes (default vp1).
	Vantage string
	// Rates in probes per second; 0 means as fast as the tool goes.
	Rates []int
	// Tools to run, of Tools (default all).
	Tools []string
	// Worker is the command line that runs a Sweep (its flags appended)
	// and prints its SweepResult as JSON: `cutoff bench sweep`. WorkerEnv
	// is added to its environment.
	Worker    []string
	WorkerEnv []string
	// Timeout is how long each tool waits for replies (default 1s).
	Timeout time.Duration
	// Limit bounds each tool's sending (default 60s); each run is killed
	// after Limit plus Timeout plus 15 s.
	Limit time.Duration
	// Pause between runs, for the machine to settle (default 1s).
	Pause time.Duration
	// LookPath finds a peer tool (default exec.LookPath).
	LookPath func(string) (string, error)
	// Log gets progress.
	Log *slog.Logger
}

// ICMPReport holds the figures of one ICMP comparison.
type ICMPReport struct {
	Range   netip.Prefix
	Vantage string
	// Targets is how many addresses every tool was given.
	Targets int
	Rows    []ICMPRow
	// Skipped names each tool that did not run, with the reason.
	Skipped map[string]string
}

// ICMPRow is one tool's sweep at one rate.
type ICMPRow struct {
	Tool string
	Rate int // asked for; 0 is max
	// Sent is the echo requests that left the vantage (its link's
	// transmitted packets) and SendTime the time from the first to the
	// last.
	Sent     uint64
	SendTime time.Duration
	// Replies is the echo replies the country sent; Matched those the
	// tool reported.
	Replies uint64
	Matched int64
	// CPU is the process's user plus system time; MaxRSS its peak
	// resident memory in bytes.
	CPU    time.Duration
	MaxRSS int64
	// Wall is the process's whole run, start to exit.
	Wall time.Duration
	Err  string
}

// PPS is the probes per second achieved.
func (r ICMPRow) PPS() float64 {
	if r.SendTime <= 0 {
		return 0
	}
	return float64(r.Sent) / r.SendTime.Seconds()
}

// MatchedShare is the share of the country's replies the tool matched.
func (r ICMPRow) MatchedShare() float64 {
	if r.Replies == 0 {
		return 0
	}
	return float64(r.Matched) / float64(r.Replies)
}

// CPUPerProbe is CPU time per probe sent.
func (r ICMPRow) CPUPerProbe() time.Duration {
	if r.Sent == 0 {
		return 0
	}
	return r.CPU / time.Duration(r.Sent)
}

// Run runs every tool at every rate, interleaved (each rate: cutoff, then
// the peers), so that a change in the machine's load hits all tools
// alike. A missing peer tool is skipped and named in the report; a failed
// run is reported in its row.
func (b *ICMP) Run(ctx context.Context) (*ICMPReport, error) {
	b.defaults()
	l := b.Lab
	rng := l.Country().AnyIP
	if !rng.IsValid() {
		return nil, errors.New("icmp bench: the lab's country has no AnyIP range (use bench.LabConfig)")
	}
	if !prober.Lab.Contains(rng.Addr()) || rng.Bits() < prober.Lab.Bits() {
		return nil, fmt.Errorf("icmp bench: %s is outside the lab's %s", rng, prober.Lab)
	}
	rep := &ICMPReport{Range: rng, Vantage: b.Vantage, Targets: count(rng, true), Skipped: map[string]string{}}
	var tools []string
	for _, t := range b.Tools {
		switch t {
		case "cutoff":
			if len(b.Worker) == 0 {
				return nil, errors.New("icmp bench: no worker command for cutoff's sweep")
			}
		case "zmap", "fping":
			if _, err := b.LookPath(t); err != nil {
				rep.Skipped[t] = fmt.Sprintf("not installed (apt-get install -y %s)", t)
				b.Log.Warn("peer tool missing: its column is skipped", "tool", t, "install", "apt-get install -y "+t)
				continue
			}
		default:
			return nil, fmt.Errorf("icmp bench: unknown tool %q (want %s)", t, strings.Join(Tools, ", "))
		}
		tools = append(tools, t)
	}
	gw, err := b.route(rng)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cutoff-bench-icmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := writeTargets(dir, rng); err != nil {
		return nil, err
	}
	for _, rate := range b.Rates {
		for _, t := range tools {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			b.Log.Info("sweep", "tool", t, "rate", rateName(rate), "range", rng, "targets", rep.Targets)
			row, err := b.run(ctx, t, rate, rng, gw, dir)
			if err != nil {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				row.Err = err.Error()
				b.Log.Warn("sweep failed", "tool", t, "rate", rateName(rate), "err", err)
			} else {
				b.Log.Info("swept", "tool", t, "rate", rateName(rate), "sent", row.Sent, "probes/s", int(row.PPS()),
					"replies", row.Replies, "matched", row.Matched, "cpu", row.CPU.Round(time.Millisecond))
			}
			rep.Rows = append(rep.Rows, row)
			select {
			case <-ctx.Done():
				return rep, ctx.Err()
			case <-time.After(b.Pause):
			}
		}
	}
	return rep, nil
}

func (b *ICMP) defaults() {
	if b.Vantage == "" {
		b.Vantage = "vp1"
	}
	if len(b.Rates) == 0 {
		b.Rates = []int{10_000, 50_000, 100_000, 0}
	}
	if len(b.Tools) == 0 {
		b.Tools = Tools
	}
	if b.Timeout <= 0 {
		b.Timeout = time.Second
	}
	if b.Limit <= 0 {
		b.Limit = time.Minute
	}
	if b.Pause <= 0 {
		b.Pause = time.Second
	}
	if b.LookPath == nil {
		b.LookPath = exec.LookPath
	}
	if b.Log == nil {
		b.Log = slog.New(slog.DiscardHandler)
	}
}

func rateName(r int) string {
	switch {
	case r == 0:
		return "max"
	case r%1000 == 0:
		return strconv.Itoa(r/1000) + "k"
	}
	return strconv.Itoa(r)
}

// gateway is how the vantage reaches the range: what zmap, which writes
// whole Ethernet frames, must be told.
type gateway struct {
	iface string
	src   netip.Addr
	mac   net.HardwareAddr
}

// route checks that the vantage cannot send anywhere but the lab (every
// route of its namespace is inside 198.18.0.0/15; there is no default
// route) and finds its interface, source address and next hop's MAC
// towards rng.
func (b *ICMP) route(rng netip.Prefix) (gateway, error) {
	var gw gateway
	err := b.Lab.Do(b.Vantage, func() error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			routes, err := netlink.RouteList(nil, fam)
			if err != nil {
				return fmt.Errorf("list routes: %w", err)
			}
			for _, r := range routes {
				if r.Dst == nil {
					return fmt.Errorf("the vantage has a default route (%s): refusing to send anything", r)
				}
				d, ok := netip.AddrFromSlice(r.Dst.IP)
				ones, _ := r.Dst.Mask.Size()
				if !ok || !prober.Lab.Contains(d.Unmap()) || ones < prober.Lab.Bits() {
					return fmt.Errorf("the vantage has a route outside the lab (%s): refusing to send anything", r.Dst)
				}
			}
		}
		rs, err := netlink.RouteGet(rng.Addr().AsSlice())
		if err != nil || len(rs) == 0 {
			return fmt.Errorf("route to %s: %v", rng, err)
		}
		r := rs[0]
		lk, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			return fmt.Errorf("route to %s: link: %w", rng, err)
		}
		gw.iface = lk.Attrs().Name
		gw.src, _ = netip.AddrFromSlice(r.Src.To4())
		neighs, err := netlink.NeighList(r.LinkIndex, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("neighbours: %w", err)
		}
		for _, n := range neighs {
			if n.IP.Equal(r.Gw) {
				gw.mac = n.HardwareAddr
			}
		}
		if gw.mac == nil || !gw.src.IsValid() {
			return fmt.Errorf("route to %s: no gateway MAC or source address", rng)
		}
		return nil
	})
	return gw, err
}

// writeTargets writes the same targets in each tool's format: fping's
// list of addresses, zmap's allowlist of prefixes (the range without its
// ends) and zmap's empty blocklist (its default one lists 198.18.0.0/15).
func writeTargets(dir string, rng netip.Prefix) error {
	var list bytes.Buffer
	addrs(rng, true, func(a netip.Addr) bool {
		list.WriteString(a.String())
		list.WriteByte('\n')
		return true
	})
	var allow bytes.Buffer
	for _, p := range cover(rng.Addr().Next(), lastAddr(rng).Prev()) {
		fmt.Fprintln(&allow, p)
	}
	for name, data := range map[string][]byte{"targets.txt": list.Bytes(), "allowlist.conf": allow.Bytes(), "blocklist.conf": nil} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// cover returns the fewest prefixes covering first..last (IPv4).
func cover(first, last netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for first.IsValid() && first.Compare(last) <= 0 {
		bits := 32
		for bits > 0 {
			p, _ := first.Prefix(bits - 1)
			if p.Addr() != first || lastAddr(p).Compare(last) > 0 {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(first, bits)
		out = append(out, p)
		first = lastAddr(p).Next()
	}
	return out
}

type sample struct {
	at time.Time
	tx uint64
}

// run sweeps the range with one tool at one rate.
func (b *ICMP) run(ctx context.Context, tool string, rate int, rng netip.Prefix, gw gateway, dir string) (ICMPRow, error) {
	row := ICMPRow{Tool: tool, Rate: rate}
	limit := b.Limit
	cooldown := time.Duration(math.Ceil(b.Timeout.Seconds())) * time.Second
	var argv []string
	out := filepath.Join(dir, tool+".out")
	switch tool {
	case "cutoff":
		argv = append(slices.Clone(b.Worker), Sweep{Range: rng, Rate: rate, Timeout: b.Timeout, Limit: limit, Mode: "raw"}.Args()...)
	case "zmap":
		argv = []string{"zmap", "--probe-module=icmp_echoscan",
			"-i", gw.iface, "-S", gw.src.String(), "-G", gw.mac.String(),
			"-w", filepath.Join(dir, "allowlist.conf"), "-b", filepath.Join(dir, "blocklist.conf"),
			"-r", strconv.Itoa(rate), // 0: no limit
			"-n", strconv.Itoa(count(rng, true)),
			"-t", strconv.Itoa(int(math.Ceil(limit.Seconds()))),
			"-c", strconv.Itoa(int(cooldown.Seconds())),
			"-T", "1", "-P", "1",
			"-o", out, "-m", filepath.Join(dir, "zmap-meta.json"),
			"-q", "--disable-syslog", "-v", "1"}
	case "fping":
		interval := "0"
		if rate > 0 {
			interval = strconv.FormatFloat(1000/float64(rate), 'f', -1, 64)
		}
		argv = []string{"fping", "-a", "-r", "0", "-t", strconv.Itoa(int(b.Timeout.Milliseconds())),
			"-i", interval, "-S", gw.src.String(), "-f", filepath.Join(dir, "targets.txt")}
	}
	if _, err := b.route(rng); err != nil { // before every run: still no way out of the lab
		return row, err
	}
	before, err := b.counters()
	if err != nil {
		return row, err
	}
	stop := make(chan struct{})
	ready := make(chan struct{})
	var samples []sample
	var sampleErr error
	var wg sync.WaitGroup
	wg.Go(func() { samples, sampleErr = b.sampleTx(gw.iface, stop, ready) })
	<-ready

	rctx, cancel := context.WithTimeout(ctx, limit+b.Timeout+15*time.Second)
	defer cancel()
	cmd := b.Lab.Command(rctx, b.Vantage, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if tool == "cutoff" {
		cmd.Env = append(os.Environ(), b.WorkerEnv...)
	}
	start := time.Now()
	runErr := cmd.Run()
	row.Wall = time.Since(start)
	time.Sleep(2 * sampleEvery) // a last sample after the exit
	close(stop)
	wg.Wait()
	if cmd.ProcessState != nil {
		row.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			row.MaxRSS = ru.Maxrss * 1024
		}
	}
	after, err := b.counters()
	if err != nil {
		return row, err
	}
	row.Replies = after.echoReps - before.echoReps
	if sampleErr != nil {
		return row, sampleErr
	}
	row.Sent, row.SendTime = sendSpan(samples)
	var ee *exec.ExitError
	if runErr != nil && !(tool == "fping" && errors.As(runErr, &ee) && ee.ExitCode() == 1) { // fping: 1 = some target unreachable
		return row, fmt.Errorf("%s: %w: %s", tool, runErr, lastLine(stderr.String()))
	}
	switch tool {
	case "cutoff":
		var res SweepResult
		if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
			return row, fmt.Errorf("cutoff sweep output: %w: %q", err, lastLine(stdout.String()))
		}
		row.Matched = res.Replies
	case "zmap":
		n, err := countLines(out)
		if err != nil {
			return row, fmt.Errorf("zmap output: %w", err)
		}
		row.Matched = n
	case "fping":
		row.Matched = int64(bytes.Count(stdout.Bytes(), []byte("\n")))
	}
	return row, nil
}

type counters struct{ echoReps uint64 }

// counters reads the country's echo replies sent.
func (b *ICMP) counters() (counters, error) {
	var c counters
	err := b.Lab.Do("country", func() error {
		s, err := readProcNet("snmp")
		if err != nil {
			return err
		}
		c.echoReps, err = snmpField(s, "Icmp", "OutEchoReps")
		return err
	})
	return c, err
}

// sampleEvery is the interval of sampleTx. Sampling costs the tools CPU
// on a small machine (every 1 ms took 10-15% off the top rates here),
// and sendSpan does not need it finer.
const sampleEvery = 10 * time.Millisecond

// sampleTx reads the vantage link's transmitted packets every
// sampleEvery until stop closes: the same clock for every tool, whatever
// its socket (zmap writes frames with AF_PACKET, past the IP stack's
// counters).
func (b *ICMP) sampleTx(iface string, stop <-chan struct{}, ready chan<- struct{}) ([]sample, error) {
	var out []sample
	err := b.Lab.Do(b.Vantage, func() error {
		for i := 0; ; i++ {
			dev, err := readProcNet("dev")
			if err != nil {
				return err
			}
			tx, err := devTxPackets(dev, iface)
			if err != nil {
				return err
			}
			out = append(out, sample{time.Now(), tx})
			if i == 0 {
				close(ready)
			}
			select {
			case <-stop:
				return nil
			default:
				time.Sleep(sampleEvery)
			}
		}
	})
	if err != nil && len(out) == 0 {
		close(ready)
	}
	return out, err
}

// sendSpan is what the samples saw: packets sent, and how long sending
// took. The time is the packets over the steady rate between the first
// and the last sample taken while sending (the interior samples), which
// does not depend on where the ends fall between two samples; with too
// few interior samples (a short run), it is the time from the first
// sample that saw a packet to the first that saw the last (each late by
// up to a sample interval, so the difference is unbiased).
func sendSpan(s []sample) (uint64, time.Duration) {
	if len(s) < 2 {
		return 0, 0
	}
	base, final := s[0].tx, s[len(s)-1].tx
	if final <= base {
		return 0, 0
	}
	sent := final - base
	var first, last = -1, -1 // interior: base < tx < final
	var firstSeen, finalSeen time.Time
	for i, x := range s {
		if firstSeen.IsZero() && x.tx > base {
			firstSeen = x.at
		}
		if x.tx == final {
			finalSeen = x.at
			break
		}
		if x.tx > base {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	if first >= 0 && last-first >= 3 && s[last].at.Sub(s[first].at) >= 30*time.Millisecond && s[last].tx > s[first].tx {
		rate := float64(s[last].tx-s[first].tx) / s[last].at.Sub(s[first].at).Seconds()
		return sent, time.Duration(float64(sent) / rate * float64(time.Second))
	}
	d := finalSeen.Sub(firstSeen)
	if d < sampleEvery {
		d = sampleEvery // all within one sample interval
	}
	return sent, d
}

func countLines(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "" {
			n++
		}
	}
	return n, sc.Err()
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// Write prints the report as a table, with each peer's probes per second
// and CPU per probe as a ratio to cutoff's at the same rate.
func (r *ICMPReport) Write(w io.Writer) {
	fmt.Fprintf(w, "ICMP echo sweep of %s (%d addresses, every one answers) from %s, one pass per run.\n",
		r.Range, r.Targets, r.Vantage)
	fmt.Fprintln(w, "SENT is counted on the vantage's link, REPLIES by the country's kernel (Icmp OutEchoReps),")
	fmt.Fprintln(w, "MATCHED from each tool's own output; CPU is the process's user+sys time (rusage).")
	fmt.Fprintln(w, "xRATE and xCPU/PROBE are the tool's figure divided by cutoff's at the same rate.")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TOOL\tRATE\tSENT\tPROBES/S\tREPLIES\tMATCHED\tMATCHED%\tCPU s\tµs/PROBE\tRSS MiB\txRATE\txCPU/PROBE\t")
	base := map[int]ICMPRow{}
	for _, row := range r.Rows {
		if row.Tool == "cutoff" && row.Err == "" {
			base[row.Rate] = row
		}
	}
	for _, row := range r.Rows {
		if row.Err != "" {
			fmt.Fprintf(tw, "%s\t%s\tfailed: %s\t\t\t\t\t\t\t\t\t\t\n", row.Tool, rateName(row.Rate), row.Err)
			continue
		}
		xr, xc := "-", "-"
		if c, ok := base[row.Rate]; ok && c.PPS() > 0 && c.CPUPerProbe() > 0 {
			xr = fmt.Sprintf("%.2f", row.PPS()/c.PPS())
			xc = fmt.Sprintf("%.2f", float64(row.CPUPerProbe())/float64(c.CPUPerProbe()))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%d\t%d\t%.2f\t%.2f\t%.1f\t%.0f\t%s\t%s\t\n",
			row.Tool, rateName(row.Rate), row.Sent, row.PPS(), row.Replies, row.Matched, math.Floor(10000*row.MatchedShare())/100, // 100.00 only when all matched
			row.CPU.Seconds(), float64(row.CPUPerProbe())/float64(time.Microsecond), float64(row.MaxRSS)/(1<<20), xr, xc)
	}
	tw.Flush()
	for _, t := range Tools {
		if why, ok := r.Skipped[t]; ok {
			fmt.Fprintf(w, "%s: skipped, %s\n", t, why)
		}
	}
}
