package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/agent"
	"github.com/cutoffnet/cutoff/prober/census"
	"github.com/cutoffnet/cutoff/store"
)

func targetsDiscoverCmd() *command {
	return &command{
		name:    "discover",
		summary: "census a country: find each block's responsive addresses and their availability",
		help: `Probes every host address of the country's blocks (ICMP echo, and a TCP
connect to each --ports port) from this machine, --rounds times, and stores
what answered: the ever-responsive addresses E(b) of each block as census
targets with their per-address history, and each block's availability
A(b), the share of probes to E(b) that were answered. The scheduler of
'cutoff probe' starts from these. Run it again later (at another time of
day) to refine A(b): each run adds to the history of the earlier ones.

Only open TCP ports become targets; network and broadcast addresses of a
/24 are never probed. Probing needs CAP_NET_RAW (or an unprivileged ping
socket allowed by net.ipv4.ping_group_range). Reserved address space
(private, loopback, documentation, benchmarking ...) is refused unless named
by --allow-reserved. Addresses in an --opt-out prefix are never probed, as
with 'cutoff probe': the rest of a partly opted-out block is censused, a
wholly opted-out block is left out. Every echo request names --contact.

Example:
  cutoff targets discover --country KP --ports 80,443 --rounds 3 --interval 10m`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			db := dbFlag(fs)
			country := fs.String("country", "", "country code, e.g. KP (required)")
			ports := fs.String("ports", "", "TCP ports to probe on every address, e.g. 80,443 (default none: ICMP only)")
			rounds := fs.Int("rounds", 1, "probe every address this many times")
			interval := fs.Duration("interval", 0, "at least this long between the starts of two rounds")
			rate := fs.Int("rate", prober.DefaultRate, "probes per second, all kinds together")
			timeout := fs.Duration("timeout", prober.DefaultTimeout, "how long to wait for each answer")
			var allow, optOut stringList
			fs.Var(&allow, "allow-reserved", "reserved `PREFIX` that may be probed anyway (repeatable; the lab uses 198.18.0.0/15)")
			fs.Var(&optOut, "opt-out", "`PREFIX` never to probe (repeatable)")
			contact := fs.String("contact", agent.Defaults().Contact, "contact/opt-out URL named in every ICMP probe's payload")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				cc := strings.ToUpper(*country)
				if err := store.CheckCountry(cc); err != nil {
					return badInput(fmt.Errorf("--country: %w", err))
				}
				ps, err := parsePorts(*ports)
				if err != nil {
					return badInput(fmt.Errorf("--ports: %w", err))
				}
				switch {
				case *rounds < 1:
					return usagef("--rounds %d: want at least 1", *rounds)
				case *rate < 1:
					return usagef("--rate %d: want at least 1", *rate)
				case *timeout <= 0:
					return usagef("--timeout %v: want a positive duration", *timeout)
				case *interval < 0:
					return usagef("--interval %v: must not be negative", *interval)
				}
				policy := prober.Policy{}
				for _, s := range allow {
					p, err := netip.ParsePrefix(s)
					if err != nil {
						return badInput(fmt.Errorf("--allow-reserved %q: %w", s, err))
					}
					policy.Allow = append(policy.Allow, p.Masked())
				}
				// The same rule as cutoff probe's --opt-out: a prefix
				// with host bits set is a typo, not a wish.
				for _, s := range optOut {
					p, err := netip.ParsePrefix(s)
					if err != nil {
						return badInput(fmt.Errorf("--opt-out %q: not a CIDR prefix", s))
					}
					if p.Masked() != p {
						return badInput(fmt.Errorf("--opt-out %s has host bits set (did you mean %s?)", p, p.Masked()))
					}
					policy.OptOut = append(policy.OptOut, p)
				}

				st, err := store.Open(ctx, *db)
				if err != nil {
					return err
				}
				defer st.Close()
				blocks, err := st.CensusBlocks(ctx, cc)
				if errors.Is(err, store.ErrInvalid) {
					return badInput(err)
				}
				if err != nil {
					return err
				}

				cfg := prober.Config{Policy: policy, Limiter: prober.NewLimiter(*rate), Timeout: *timeout, Log: a.log}
				icmp, err := prober.NewICMP(prober.ICMPConfig{Config: cfg, Contact: *contact})
				if err != nil {
					return fmt.Errorf("icmp engine: %w", err)
				}
				defer icmp.Close()
				probers := map[prober.Kind]prober.Prober{prober.KindICMP: icmp}
				if len(ps) > 0 {
					tcp, err := prober.NewTCP(prober.TCPConfig{Config: cfg})
					if err != nil {
						return fmt.Errorf("tcp engine: %w", err)
					}
					defer tcp.Close()
					probers[prober.KindTCP] = tcp
				}

				// Enough probes in flight to keep the rate when nothing
				// answers: rate × timeout, with room to spare.
				inflight := min(max(int(float64(*rate)*timeout.Seconds()*1.25), 256), 1<<20)
				ccfg := census.Config{Rounds: *rounds, Interval: *interval, Ports: ps, OptOut: policy.OptOut, MaxInFlight: inflight, Log: a.log}
				var bar *progressbar.ProgressBar
				if stderrIsTerminal() {
					ccfg.Progress = func(done, total int64) {
						if bar == nil {
							bar = progressbar.NewOptions64(total,
								progressbar.OptionSetDescription("census "+cc),
								progressbar.OptionSetWriter(a.stderr),
								progressbar.OptionShowCount(),
								progressbar.OptionShowIts(),
								progressbar.OptionSetItsString("probes"),
								progressbar.OptionThrottle(100*time.Millisecond),
								progressbar.OptionClearOnFinish())
						}
						bar.Set64(done)
					}
				}
				a.log.Info("census starting", "country", cc, "blocks", len(blocks), "rounds", *rounds, "ports", ps, "rate", *rate)
				c, err := census.Run(ctx, cc, blocks, probers, ccfg)
				if bar != nil {
					bar.Finish()
				}
				if err != nil {
					return err
				}
				opted := 0
				for _, b := range blocks {
					if census.OptedOut(b, policy.OptOut) {
						opted++
					}
				}
				if len(c.Blocks) == 0 {
					if opted > 0 && opted == len(blocks) {
						return badInput(fmt.Errorf("all %d blocks of %s are opted out (--opt-out): nothing censused", len(blocks), cc))
					}
					return badInput(fmt.Errorf("the address policy refused all %d blocks of %s: nothing censused (reserved space needs --allow-reserved)", len(blocks), cc))
				}
				stats, err := st.SaveCensus(ctx, c)
				if errors.Is(err, store.ErrInvalid) {
					return badInput(err)
				}
				if err != nil {
					return err
				}
				kinds := "icmp"
				if len(ps) > 0 {
					kinds += " and tcp " + *ports
				}
				fmt.Fprintf(a.stdout, "%s: censused %d of %d blocks (%s, %d rounds): %d with responsive addresses; %d addresses answered, %d of them new targets\n",
					cc, stats.Blocks, len(blocks), kinds, *rounds, stats.Responsive, len(c.Hosts), stats.New)
				if opted > 0 {
					fmt.Fprintf(a.stdout, "%s: %d blocks are opted out (--opt-out) and were not probed\n", cc, opted)
				}
				if n := len(blocks) - stats.Blocks - opted; n > 0 {
					fmt.Fprintf(a.stdout, "%s: %d blocks were refused by the address policy and left uncensused (see --allow-reserved)\n", cc, n)
				}
				return nil
			}
		},
	}
}

// parsePorts reads a comma-separated list of TCP ports.
func parsePorts(s string) ([]uint16, error) {
	var out []uint16
	seen := map[uint16]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port number (1-65535)", f)
		}
		if !seen[uint16(n)] {
			seen[uint16(n)] = true
			out = append(out, uint16(n))
		}
	}
	return out, nil
}
