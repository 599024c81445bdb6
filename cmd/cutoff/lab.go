package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/labdb"
	"github.com/cutoffnet/cutoff/store"
)

func labCmd() *command {
	return &command{
		name:    "lab",
		summary: "a simulated country in network namespaces, with outages on demand (root)",
		help: `The lab is a small internet inside Linux network namespaces, addressed
from 198.18.0.0/15 only and with no link to the root namespace: two
vantages with their own uplinks, a transit holding control targets, a
border, and a country of four networks. Faults cut the border, a network
or a vantage's uplink, add packet loss (nftables) or delay (sch_netem,
where the kernel has it), or make a network's hosts go silent one by one.
Every command needs root.`,
		subs: []*command{
			labUpCmd(), labDownCmd(), labStatusCmd(),
			labCutCmd(), labRestoreCmd(), labLossCmd(), labDelayCmd(), labDecayCmd(),
			labSeedCmd(), labRunCmd(), labExecCmd(), labServeCmd(),
		},
	}
}

// interspersed lets flags follow positional arguments, as in
// `cutoff lab decay net2 --over 60s`: the flag package stops at the first
// positional argument, so parse again after each one.
func interspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	fs.SetOutput(io.Discard)
	for len(args) > 0 {
		if strings.HasPrefix(args[0], "-") && args[0] != "-" {
			if err := fs.Parse(args); err != nil {
				return nil, usagef("%v", err)
			}
			args = fs.Args()
			continue
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	return pos, nil
}

// labFlags are the flags naming a lab.
type labFlags struct{ prefix, stateDir *string }

func addLabFlags(fs *flag.FlagSet) labFlags {
	d := lab.Default()
	return labFlags{
		prefix:   fs.String("prefix", d.Prefix, "name `PREFIX` of the lab's namespaces (<prefix>-<role>)"),
		stateDir: fs.String("state-dir", d.StateDir, "`DIR` holding each lab's state (DIR/<prefix>)"),
	}
}

// attach opens the running lab.
func (f labFlags) attach() (*lab.Lab, error) {
	l, err := lab.Attach(*f.stateDir, *f.prefix)
	if errors.Is(err, lab.ErrNotUp) {
		return nil, exitError{code: exitFailure, msg: err.Error()}
	}
	return l, err
}

// config is the lab's saved config, else the given file, else the
// default, with the flags' prefix and state directory.
func (f labFlags) config(file string, explicit map[string]bool) (lab.Config, error) {
	var cfg lab.Config
	var err error
	switch {
	case file != "":
		if cfg, err = lab.LoadConfig(file); err != nil {
			return cfg, badInput(err)
		}
	default:
		cfg = lab.Default()
	}
	if explicit["prefix"] || file == "" {
		cfg.Prefix = *f.prefix
	}
	if explicit["state-dir"] || file == "" {
		cfg.StateDir = *f.stateDir
	}
	return cfg, badInput(cfg.Validate())
}

func explicitFlags(fs *flag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

// startServe starts the detached `cutoff lab serve` daemon for the lab.
func startServe(ctx context.Context, l *lab.Lab) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find own executable: %w", err)
	}
	cmd := exec.Command(exe, "lab", "serve", "--prefix", l.Prefix(), "--state-dir", l.Config().StateDir)
	return lab.StartServe(ctx, l.StateDir(), cmd)
}

func labUpCmd() *command {
	return &command{
		name:    "up",
		summary: "create the lab (or repair it, ending every fault) and start its serve daemon",
		help: `Creates the lab's namespaces, links, addresses and routes, raises the
kernel's ICMP rate limits inside them, and starts a detached
'cutoff lab serve' daemon holding the TCP listeners and DNS servers (pid
file and log in the state directory). Running it on a lab that is up
repairs it to its configuration, ending every fault.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			lf := addLabFlags(fs)
			file := fs.String("config", "", "lab `FILE` (YAML); default: the built-in lab")
			noServe := fs.Bool("no-serve", false, "do not start the serve daemon (no TCP or DNS listeners)")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				cfg, err := lf.config(*file, explicitFlags(fs))
				if err != nil {
					return err
				}
				l, err := lab.Up(ctx, cfg)
				if err != nil {
					return err
				}
				defer l.Close()
				pid := 0
				if !*noServe {
					if pid, err = startServe(ctx, l); err != nil {
						return err
					}
				}
				fmt.Fprintf(a.stdout, "lab %s is up", cfg.Prefix)
				if pid != 0 {
					fmt.Fprintf(a.stdout, "; serve daemon pid %d", pid)
				}
				fmt.Fprintln(a.stdout)
				printTopology(a, l)
				return nil
			}
		},
	}
}

func printTopology(a *app, l *lab.Lab) {
	c := l.Country()
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	for _, v := range l.Vantages() {
		fmt.Fprintf(tw, "  vantage %s\t%s\tip netns exec %s …\n", v.Name, v.Addr, l.Namespace(v.Name))
	}
	var ctl []string
	for _, t := range l.ControlTargets() {
		ctl = append(ctl, t.String())
	}
	fmt.Fprintf(tw, "  control targets\t%s\n", strings.Join(ctl, ", "))
	fmt.Fprintf(tw, "  country %s (%s)\t%s\n", c.Code, c.Name, joinPrefixes(c.Prefixes))
	for _, n := range c.Networks {
		icmp := "answers ICMP"
		if n.FilterICMP {
			icmp = "filters ICMP"
		}
		fmt.Fprintf(tw, "  network %s\t%s\t%d hosts, %s\n", n.Name, n.Prefix, len(n.Hosts), icmp)
	}
	tw.Flush()
}

func joinPrefixes[T fmt.Stringer](ps []T) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

func labDownCmd() *command {
	return &command{
		name:    "down",
		summary: "remove the lab: stop its serve daemon, delete its namespaces and state",
		help: `Finds the lab's namespaces by name ("<prefix>-<role>"), so it also
cleans up after a crash, and never touches another prefix's namespaces.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			lf := addLabFlags(fs)
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				cfg, err := lab.SavedConfig(*lf.stateDir, *lf.prefix)
				if err != nil {
					// No saved state (a crash, or never up): down by name.
					cfg = lab.Default()
					cfg.Prefix, cfg.StateDir = *lf.prefix, *lf.stateDir
				}
				names, err := lab.Namespaces(cfg.Prefix)
				if err != nil {
					return err
				}
				if err := lab.Down(ctx, cfg); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "lab %s is down (%d namespaces removed)\n", cfg.Prefix, len(names))
				return nil
			}
		},
	}
}

func labStatusCmd() *command {
	return &command{
		name:    "status",
		summary: "show the lab's topology, links, hosts answering, faults and serve daemon",
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			lf := addLabFlags(fs)
			asJSON := fs.Bool("json", false, "print status and ground truth (every responsive host) as JSON")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				l, err := lf.attach()
				if err != nil {
					if names, _ := lab.Namespaces(*lf.prefix); len(names) > 0 {
						fmt.Fprintf(a.stdout, "lab %s is not up, but %d of its namespaces remain: %s\nrun 'cutoff lab down --prefix %s' to remove them\n",
							*lf.prefix, len(names), strings.Join(names, " "), *lf.prefix)
					}
					return err
				}
				defer l.Close()
				st, err := l.Status(ctx)
				if err != nil {
					return err
				}
				if *asJSON {
					e := json.NewEncoder(a.stdout)
					e.SetIndent("", "  ")
					return e.Encode(struct {
						Status  lab.Status      `json:"status"`
						Faults  []string        `json:"faults"`
						Country lab.CountryInfo `json:"country"`
						Control []prober.Target `json:"control_targets"`
					}{st, st.Faults(), l.Country(), l.ControlTargets()})
				}
				printStatus(a, l, st)
				return nil
			}
		},
	}
}

func printStatus(a *app, l *lab.Lab, st lab.Status) {
	w := a.stdout
	serve := "not running (no TCP or DNS listeners)"
	if st.Serve.Running {
		serve = fmt.Sprintf("pid %d, log %s", st.Serve.PID, st.Serve.Log)
	}
	fmt.Fprintf(w, "lab %s: %d namespaces; serve daemon: %s\n\n", st.Prefix, len(st.Namespaces), serve)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LINK\tTARGET\tSUBNET\tSTATE\tLOSS\tDELAY")
	for _, k := range st.Links {
		state := "up"
		if !k.IsUp {
			state = "CUT"
		}
		loss, delay := "-", "-"
		if k.Loss > 0 {
			loss = fmt.Sprintf("%d%%", k.Loss)
		}
		if k.Delay > 0 {
			delay = k.Delay.String()
		}
		target := k.Target
		if target == "" {
			target = "-"
		}
		fmt.Fprintf(tw, "%s – %s\t%s\t%s\t%s\t%s\t%s\n", k.Up, k.Down, target, k.Subnet, state, loss, delay)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tPREFIX\tHOSTS\tANSWERING\tTCP HOSTS\tDNS\tICMP")
	for _, n := range st.Networks {
		icmp := "answers"
		if n.FilterICMP {
			icmp = "filtered"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\n", n.Name, n.Prefix, n.Hosts, n.Answering, n.TCP, n.DNS, icmp)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, v := range st.Vantages {
		fmt.Fprintf(w, "vantage %s: %s (namespace %s)\n", v.Name, v.Addr, l.Namespace(v.Name))
	}
	fmt.Fprintf(w, "control targets: %s\n", joinPrefixes(st.Control))
	if f := st.Faults(); len(f) > 0 {
		fmt.Fprintf(w, "faults: %s\n", strings.Join(f, "; "))
	} else {
		fmt.Fprintln(w, "faults: none")
	}
	if st.Netem {
		fmt.Fprintln(w, "delay: available (sch_netem)")
	} else {
		fmt.Fprintln(w, "delay: unavailable, this kernel has no sch_netem (loss works: it uses nftables)")
	}
}

// targetArgs checks a fault command's arguments: a target and n more.
func targetArgs(args []string, n int, usage string) error {
	if len(args) != n+1 {
		return usagef("want %s", usage)
	}
	return nil
}

func labFaultCmd(name, summary, help, usage string, n int, fn func(ctx context.Context, a *app, l *lab.Lab, args []string) error) *command {
	return &command{
		name: name, args: usage, summary: summary, help: help,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			lf := addLabFlags(fs)
			return func(ctx context.Context, args []string) error {
				args, err := interspersed(fs, args)
				if err != nil {
					return err
				}
				if err := targetArgs(args, n, usage); err != nil {
					return err
				}
				l, err := lf.attach()
				if err != nil {
					return err
				}
				defer l.Close()
				if args[0] != "all" && !isTarget(l, args[0]) {
					return usagef("unknown target %q (want one of %s)", args[0], strings.Join(l.Targets(), ", "))
				}
				return fn(ctx, a, l, args)
			}
		},
	}
}

func isTarget(l *lab.Lab, t string) bool {
	for _, x := range l.Targets() {
		if x == t {
			return true
		}
	}
	for _, n := range l.Networks() {
		if n.Prefix.String() == t {
			return true
		}
	}
	return false
}

const targetHelp = `TARGET is border (the link between the border and the country: the
whole country goes dark), a network (net0…, or its prefix) or a vantage
(vp1…: its own uplink).`

func labCutCmd() *command {
	return labFaultCmd("cut", "cut a target's link", targetHelp+`

The router above the cut answers for the space behind it with ICMP host
unreachable (cut_answer: silent in the lab file makes it drop instead).`, "TARGET", 0,
		func(ctx context.Context, a *app, l *lab.Lab, args []string) error {
			if args[0] == "all" {
				return usagef("cut all: name one target (border cuts the whole country)")
			}
			if err := l.Cut(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "cut %s\n", args[0])
			return nil
		})
}

func labRestoreCmd() *command {
	return labFaultCmd("restore", "end every fault on a target, or on all", targetHelp+`

Brings the link back up with its routes, removes loss and delay, and
brings a decayed network's hosts back. A decay still running in another
'cutoff lab decay' process keeps going: stop that first.`, "TARGET|all", 0,
		func(ctx context.Context, a *app, l *lab.Lab, args []string) error {
			if err := l.Restore(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "restored %s\n", args[0])
			return nil
		})
}

func labLossCmd() *command {
	return labFaultCmd("loss", "drop a share of the packets sent down a target's link", targetHelp+`

N% of the packets leaving the transit side of the link are dropped
(nftables: numgen random mod 100 < N), so N% of probes go unanswered.
0% removes the loss.`, "TARGET N%", 1,
		func(ctx context.Context, a *app, l *lab.Lab, args []string) error {
			n, err := strconv.Atoi(strings.TrimSuffix(args[1], "%"))
			if err != nil || n < 0 || n > 100 {
				return usagef("loss %q: want a percentage such as 20%%", args[1])
			}
			if err := l.Loss(ctx, args[0], n); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "loss %s %d%%\n", args[0], n)
			return nil
		})
}

func labDelayCmd() *command {
	return labFaultCmd("delay", "add latency to a target's link (needs sch_netem)", targetHelp+`

Needs the kernel's sch_netem; without it the command says so and fails.
0s removes the delay.`, "TARGET DURATION", 1,
		func(ctx context.Context, a *app, l *lab.Lab, args []string) error {
			d, err := time.ParseDuration(args[1])
			if err != nil || d < 0 {
				return usagef("delay %q: want a duration such as 50ms", args[1])
			}
			if err := l.Delay(ctx, args[0], d); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "delay %s %s\n", args[0], d)
			return nil
		})
}

func labDecayCmd() *command {
	return &command{
		name: "decay", args: "NETWORK", summary: "make a network's hosts stop answering one by one",
		help: `Removes the network's responsive addresses one at a time, in a fixed
random order, evenly over --over; runs in the foreground until the last
is gone. 'cutoff lab restore NETWORK' brings them back.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			lf := addLabFlags(fs)
			over := fs.Duration("over", time.Minute, "how long until the last host is silent")
			return func(ctx context.Context, args []string) error {
				args, err := interspersed(fs, args)
				if err != nil {
					return err
				}
				if err := targetArgs(args, 0, "NETWORK"); err != nil {
					return err
				}
				if *over < 0 {
					return usagef("--over %s: want a positive duration", *over)
				}
				l, err := lf.attach()
				if err != nil {
					return err
				}
				defer l.Close()
				err = l.Decay(ctx, args[0], *over, func(left int) {
					fmt.Fprintf(a.stdout, "%s %s: %d hosts still answer\n", time.Now().Format(time.TimeOnly), args[0], left)
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%s has decayed; 'cutoff lab restore %s' brings it back\n", args[0], args[0])
				return nil
			}
		},
	}
}

func labRunCmd() *command {
	return &command{
		name: "run", args: "SCENARIO", summary: "play a scenario of faults and record its ground truth",
		help: `Plays a scenario file: events at offsets in story time, compressed by
the scale, e.g.

  start 2014-12-21T12:00:00Z     # optional story clock
  scale 1h=4s                    # optional compression; --scale overrides
  +0s      up
  +90s     cut border
  +180s    restore border
  +200s    loss net1 20%
  +300s    decay net2 over 60s
  +10m     flap net1 every 10m for 2h
  @2014-12-22T16:15:00Z cut border   # a story time, with start

Events: up, cut T, restore T|all, loss T N%, delay T D (needs sch_netem),
decay T over D, flap T every P for D, end. Each fault is recorded when it
takes effect and when it ends: into lab_truth with --db, and into the
--truth JSON file. Faults still active at the end are restored unless
--keep-faults. A bad file is reported with its line numbers (exit 2)
before anything happens.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			lf := addLabFlags(fs)
			file := fs.String("config", "", "lab `FILE` used when the scenario's up brings the lab up; default: the built-in lab")
			scale := fs.String("scale", "", "time compression, STORY=WALL (1h=4s) or a factor (900); overrides the scenario's")
			db := fs.String("db", "", "record ground truth in this database's lab_truth table (URL or keyword/value string)")
			truth := fs.String("truth", "", "write ground truth to this JSON `FILE`")
			keep := fs.Bool("keep-faults", false, "leave faults still active at the end in place")
			return func(ctx context.Context, args []string) error {
				args, err := interspersed(fs, args)
				if err != nil {
					return err
				}
				if len(args) != 1 {
					return usagef("want one scenario file")
				}
				sc, err := lab.LoadScenario(args[0])
				if err != nil {
					return badInput(err)
				}
				var opt lab.RunOptions
				if *scale != "" {
					if opt.Scale, err = lab.ParseScale(*scale); err != nil {
						return badInput(fmt.Errorf("--scale: %w", err))
					}
				}
				cfg, err := lab.SavedConfig(*lf.stateDir, *lf.prefix)
				up := err == nil
				if !up {
					if cfg, err = lf.config(*file, explicitFlags(fs)); err != nil {
						return err
					}
				}
				if err := sc.Check(cfg); err != nil {
					return badInput(err)
				}
				var l *lab.Lab
				if up {
					if l, err = lab.Open(cfg); err != nil {
						return err
					}
					defer l.Close()
				}
				var opened []*lab.Lab
				defer func() {
					for _, o := range opened {
						o.Close()
					}
				}()
				opt.Up = func(ctx context.Context) (*lab.Lab, error) {
					nl, err := lab.Up(ctx, cfg)
					if err != nil {
						return nil, err
					}
					opened = append(opened, nl)
					if _, err := startServe(ctx, nl); err != nil {
						return nil, err
					}
					return nl, nil
				}
				if *db != "" {
					st, err := store.Open(ctx, *db)
					if err != nil {
						return err
					}
					defer st.Close()
					opt.Recorder = labdb.Recorder{Store: st}
				}
				opt.TruthFile, opt.KeepFaults, opt.Log = *truth, *keep, a.log
				opt.OnEvent = func(e lab.Event, wall time.Time, story *time.Time) {
					when := wall.Format("15:04:05.000")
					if story != nil {
						when += "  story " + story.Format("2006-01-02 15:04:05")
					}
					fmt.Fprintf(a.stdout, "%s  %s\n", when, e)
				}
				res, err := lab.Run(ctx, l, sc, opt)
				if res != nil {
					printTruth(a, res)
				}
				return err
			}
		},
	}
}

func printTruth(a *app, res *lab.RunResult) {
	fmt.Fprintf(a.stdout, "\nrun %s: %d faults\n", res.RunID, len(res.Faults))
	if len(res.Faults) == 0 {
		return
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FAULT\tTARGET\tDETAIL\tSTARTED\tENDED\tSTORY START\tSTORY END")
	ts := func(t *time.Time, layout string) string {
		if t == nil {
			return "-"
		}
		return t.Format(layout)
	}
	for _, f := range res.Faults {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Fault, f.Target, f.Detail,
			f.StartedAt.Format("15:04:05.000"), ts(f.EndedAt, "15:04:05.000"),
			ts(f.StoryStart, "2006-01-02 15:04"), ts(f.StoryEnd, "2006-01-02 15:04"))
	}
	tw.Flush()
}

func labExecCmd() *command {
	return &command{
		name: "exec", args: "ROLE -- CMD [ARGS…]", summary: "run a command inside a lab namespace (e.g. a vantage)",
		help: `Runs CMD inside the namespace of ROLE (vp1, vp2, transit, country, net0, …)
through 'ip netns exec', with this terminal's input and output; exits with
the command's exit code. The command shares the filesystem, so a prober
there reaches PostgreSQL through a unix socket.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			lf := addLabFlags(fs)
			return func(ctx context.Context, args []string) error {
				if len(args) > 1 && args[1] == "--" {
					args = append(args[:1], args[2:]...)
				}
				if len(args) < 2 {
					return usagef("want a role and a command: exec vp1 -- CMD ARGS…")
				}
				l, err := lf.attach()
				if err != nil {
					return err
				}
				defer l.Close()
				found := false
				for _, n := range mustNamespaces(*lf.prefix) {
					found = found || n == l.Namespace(args[0])
				}
				if !found {
					return usagef("lab %s has no namespace for %q", l.Prefix(), args[0])
				}
				cmd := l.Command(ctx, args[0], args[1], args[2:]...)
				cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, a.stdout, a.stderr
				// A SIGTERM to us is passed on, so a prober in the lab
				// flushes and exits cleanly instead of being killed.
				cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
				cmd.WaitDelay = time.Minute
				err = cmd.Run()
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return exitError{code: ee.ExitCode()}
				}
				return err
			}
		},
	}
}

func mustNamespaces(prefix string) []string {
	n, _ := lab.Namespaces(prefix)
	return n
}

func labServeCmd() *command {
	return &command{
		name: "serve", summary: "hold the lab's TCP listeners and DNS servers (started by up)", hidden: true,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			lf := addLabFlags(fs)
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				l, err := lf.attach()
				if err != nil {
					return err
				}
				defer l.Close()
				srv, err := l.Listen(a.log)
				if err != nil {
					return err
				}
				if err := lab.WritePID(l.StateDir()); err != nil {
					srv.Close()
					return err
				}
				defer lab.RemovePID(l.StateDir())
				return srv.Serve(ctx)
			}
		},
	}
}
