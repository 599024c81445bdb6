package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // bad flags, bad arguments or bad input files
	exitOutage  = 3 // report --fail-on-outage found an ongoing outage
)

// app carries what every command shares.
type app struct {
	stdout, stderr io.Writer
	log            *slog.Logger
}

// runFunc runs a command once its flags are parsed.
type runFunc func(ctx context.Context, args []string) error

// command is a node of the command tree: a leaf has setup, a group has subs.
type command struct {
	name    string
	args    string // synopsis of positional arguments, for help
	summary string
	help    string // longer description, for --help
	// setup registers the command's flags and returns what runs it.
	setup func(a *app, fs *flag.FlagSet) runFunc
	subs  []*command
	// hidden commands are internal (started by other commands) and not
	// listed in help.
	hidden bool
}

// usageError is bad usage or bad input: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// badInput marks err as the user's input being wrong (exit 2), as opposed
// to the command failing while running (exit 1).
func badInput(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitError ends the command with a specific code and message.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func root() *command {
	return &command{
		name:    "cutoff",
		summary: "measure when a country drops off the internet",
		help: `cutoff probes a country's address space from vantage points around the
world, stores every result in PostgreSQL and derives block-, network- and
country-level up/down intervals from them.`,
		subs: commands(),
	}
}

// run executes the command line and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	global := flag.NewFlagSet("cutoff", flag.ContinueOnError)
	global.SetOutput(stderr)
	level := global.String("log-level", "info", "log level: debug, info, warn or error")
	jsonLogs := global.Bool("log-json", false, "log as JSON lines instead of text")
	r := root()
	global.Usage = func() {} // help is printed below, once, where it belongs
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printGroupHelp(stdout, r, nil, global)
			return exitOK
		}
		fmt.Fprintln(stderr, "run 'cutoff --help' for usage")
		return exitUsage
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "cutoff: --log-level: %v\n", err)
		return exitUsage
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewTextHandler(stderr, opts)
	if *jsonLogs {
		h = slog.NewJSONHandler(stderr, opts)
	}
	a := &app{stdout: stdout, stderr: stderr, log: slog.New(h)}

	cmd, path, rest := r, []string{"cutoff"}, global.Args()
	for cmd.setup == nil {
		if len(rest) == 0 || rest[0] == "help" || rest[0] == "-h" || rest[0] == "--help" || rest[0] == "-help" {
			if len(rest) == 0 {
				printGroupHelp(stderr, cmd, path[1:], global)
				return exitUsage
			}
			printGroupHelp(stdout, cmd, path[1:], global)
			return exitOK
		}
		sub := cmd.find(rest[0])
		if sub == nil {
			fmt.Fprintf(stderr, "%s: unknown command %q\n", strings.Join(path, " "), rest[0])
			printGroupHelp(stderr, cmd, path[1:], global)
			return exitUsage
		}
		cmd, path, rest = sub, append(path, sub.name), rest[1:]
	}

	name := strings.Join(path, " ")
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	runner := cmd.setup(a, fs)
	fs.Usage = func() {} // the flag package has printed the error; we add a hint below
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printLeafHelp(stdout, name, cmd, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "run '%s --help' for usage\n", name)
		return exitUsage
	}
	err := runner(ctx, fs.Args())
	if err == nil {
		return exitOK
	}
	var ue usageError
	var ee exitError
	switch {
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(stderr, "%s: %s\n", name, ee.msg)
		}
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		fmt.Fprintf(stderr, "run '%s --help' for usage\n", name)
		return exitUsage
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		fmt.Fprintf(stderr, "%s: interrupted\n", name)
		return exitFailure
	default:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitFailure
	}
}

func (c *command) find(name string) *command {
	for _, s := range c.subs {
		if s.name == name {
			return s
		}
	}
	return nil
}

func printGroupHelp(w io.Writer, c *command, path []string, global *flag.FlagSet) {
	full := strings.TrimSpace("cutoff " + strings.Join(path, " "))
	fmt.Fprintf(w, "%s: %s\n\n", full, c.summary)
	if c.help != "" {
		fmt.Fprintf(w, "%s\n\n", c.help)
	}
	if len(path) == 0 {
		fmt.Fprintf(w, "Usage: cutoff [global flags] <command> [flags] [args]\n\nCommands:\n")
	} else {
		fmt.Fprintf(w, "Usage: %s <command> [flags] [args]\n\nCommands:\n", full)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range c.subs {
		if !s.hidden {
			fmt.Fprintf(tw, "  %s\t%s\n", s.name, s.summary)
		}
	}
	tw.Flush()
	if len(path) == 0 {
		fmt.Fprintf(w, "\nGlobal flags:\n")
		global.SetOutput(w)
		global.PrintDefaults()
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for a command's flags.\n", full)
}

func printLeafHelp(w io.Writer, name string, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "%s: %s\n\nUsage: %s [flags]", name, c.summary, name)
	if c.args != "" {
		fmt.Fprintf(w, " %s", c.args)
	}
	fmt.Fprintln(w)
	if c.help != "" {
		fmt.Fprintf(w, "\n%s\n", c.help)
	}
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	if has {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// noArgs rejects positional arguments for commands that take none.
func noArgs(args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	return nil
}

// dbFlag registers --db.
func dbFlag(fs *flag.FlagSet) *string {
	return fs.String("db", "", "PostgreSQL connection URL or keyword/value string, e.g. 'host=/run/postgresql dbname=cutoff' (default $DATABASE_URL, else libpq's PG* variables)")
}

// stringList is a repeatable flag that also splits on commas.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

func stderrIsTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
