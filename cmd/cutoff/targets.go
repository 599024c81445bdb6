package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/schollz/progressbar/v3"

	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/rir"
)

func targetsCmd() *command {
	return &command{
		name:    "targets",
		summary: "manage what is watched: countries' address space and service targets",
		subs: []*command{
			targetsImportCmd(),
			targetsAddCmd(),
			targetsRemoveCmd(),
			targetsListCmd(),
			targetsDiscoverCmd(),
		},
	}
}

func targetsImportCmd() *command {
	return &command{
		name:    "import",
		summary: "load a country's address space from RIR statistics files or CIDR lists",
		help: `Reads RIR "delegated-*-extended" statistics files (any of the five
registries; a local path or an http(s) URL, e.g.
https://ftp.apnic.net/stats/apnic/delegated-apnic-extended-latest) and/or
plain CIDR lists (one prefix per line, '#' comments), keeps the country's
allocated and assigned ipv4 and ipv6 records, splits address counts into
exact prefixes, and fills the prefixes and blocks tables.

Each input has a source label (an RIR file's registry, a list's file name,
or --source). Re-importing a source replaces that source's prefixes in one
transaction; prefixes that stay keep their blocks and census data. Any
malformed line rejects the whole import (exit 2) and nothing is written.`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			db := dbFlag(fs)
			country := fs.String("country", "", "country code, e.g. KP (required)")
			name := fs.String("name", "", "country name to record, e.g. 'North Korea'")
			source := fs.String("source", "", "source label for every input (default: the registry for RIR files, the file name for lists)")
			var rirs, cidrs stringList
			fs.Var(&rirs, "rir", "RIR delegated-extended `FILE_OR_URL` (repeatable)")
			fs.Var(&cidrs, "cidr", "plain CIDR list `FILE_OR_URL` (repeatable)")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				cc := strings.ToUpper(*country)
				if err := store.CheckCountry(cc); err != nil {
					return badInput(fmt.Errorf("--country: %w", err))
				}
				if len(rirs)+len(cidrs) == 0 {
					return usagef("give at least one --rir or --cidr input")
				}
				// Read and check every input before touching the database.
				imps := map[string]*store.Import{}
				var order []string
				var all []rir.Network
				add := func(label, origin, cname string, nets []rir.Network) {
					if *source != "" {
						label = *source
					}
					imp := imps[label]
					if imp == nil {
						imp = &store.Import{Country: cc, Name: *name, Source: label, Origin: origin}
						imps[label] = imp
						order = append(order, label)
					} else {
						imp.Origin += " " + origin
					}
					if imp.Name == "" {
						imp.Name = cname
					}
					for _, n := range nets {
						imp.Prefixes = append(imp.Prefixes, store.Prefix{Prefix: n.Prefix, Registry: n.Registry, Status: n.Status, Delegated: n.Delegated, ASN: n.ASN})
					}
					all = append(all, nets...)
				}
				for _, src := range rirs {
					f, err := readInput(ctx, a, src, func(r io.Reader) (any, error) { return rir.Parse(r, src) })
					if err != nil {
						return err
					}
					file := f.(*rir.File)
					nets := file.Country(cc)
					if len(nets) == 0 {
						return badInput(fmt.Errorf("%s: no allocated or assigned ipv4/ipv6 records for %s", src, cc))
					}
					add(file.Registry, src, "", nets)
				}
				for _, src := range cidrs {
					l, err := readInput(ctx, a, src, func(r io.Reader) (any, error) { return rir.ParseList(r, src) })
					if err != nil {
						return err
					}
					list := l.(*rir.List)
					if len(list.Prefixes) == 0 {
						return badInput(fmt.Errorf("%s: no prefixes", src))
					}
					add("list:"+filepath.Base(src), src, list.Name, list.Prefixes)
				}
				if err := rir.CheckOverlap("inputs", all); err != nil {
					return badInput(err)
				}

				st, err := store.Open(ctx, *db)
				if err != nil {
					return err
				}
				defer st.Close()
				batch := make([]store.Import, len(order))
				for i, label := range order {
					batch[i] = *imps[label]
				}
				stats, err := st.ImportPrefixes(ctx, batch...)
				if errors.Is(err, store.ErrInvalid) {
					return badInput(err)
				}
				if err != nil {
					return err
				}
				for i, s := range stats {
					fmt.Fprintf(a.stdout, "%s: source %s: %d prefixes (%d new, %d kept, %d removed); %s now has %d blocks\n",
						cc, batch[i].Source, s.Prefixes, s.Added, s.Kept, s.Removed, cc, s.Blocks)
				}
				return nil
			}
		},
	}
}

// readInput opens a file or URL, showing a progress bar on a terminal, and
// parses it. A local file that is not there and errors parsing are bad
// input; other errors opening (a registry's server away) are runtime
// failures.
func readInput(ctx context.Context, a *app, src string, parse func(io.Reader) (any, error)) (any, error) {
	var bar *progressbar.ProgressBar
	in, err := rir.Open(ctx, src, func(r io.Reader, size int64) io.Reader {
		if !stderrIsTerminal() {
			return r
		}
		bar = progressbar.DefaultBytes(size, "read "+filepath.Base(src))
		return io.TeeReader(r, bar)
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, badInput(err)
	}
	if err != nil {
		return nil, err
	}
	defer in.Close()
	v, err := parse(in)
	if bar != nil {
		bar.Finish()
	}
	var perr *rir.Error
	if errors.As(err, &perr) {
		return nil, badInput(err)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", src, err)
	}
	return v, nil
}

// targetFlags registers the flags that name a service target.
func targetFlags(fs *flag.FlagSet) func() (store.Target, error) {
	kind := fs.String("kind", "", "probe kind: icmp, tcp or dns (required)")
	addr := fs.String("addr", "", "target address (required)")
	port := fs.Uint("port", 0, "port (tcp: required; dns: default 53)")
	zone := fs.String("zone", "", "dns: zone whose SOA to ask for (required for dns)")
	return func() (store.Target, error) {
		a, err := netip.ParseAddr(*addr)
		if err != nil {
			return store.Target{}, usagef("--addr %q: not an IP address", *addr)
		}
		if *port > 65535 {
			return store.Target{}, usagef("--port %d: over 65535", *port)
		}
		return store.Target{Kind: *kind, Addr: a, Port: uint16(*port), Qname: *zone}, nil
	}
}

func targetsAddCmd() *command {
	return &command{
		name:    "add",
		summary: "add a service target of a country, or a control target",
		help: `A service target is a host of the watched country that answers a known
service: a web server's TCP port, or an authoritative DNS server and its
zone. A control target (--control) lies outside every watched country; each
vantage probes control targets every round to tell its own loss of
connectivity from a country going dark.

Examples:
  cutoff targets add --country KP --kind tcp --addr 175.45.176.71 --port 80
  cutoff targets add --country KP --kind dns --addr 175.45.176.15 --zone kp
  cutoff targets add --control --kind icmp --addr 192.0.2.1`,
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			db := dbFlag(fs)
			country := fs.String("country", "", "country code of the target")
			control := fs.Bool("control", false, "a control target, outside every watched country")
			target := targetFlags(fs)
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				t, err := target()
				if err != nil {
					return err
				}
				t.Country, t.Control = strings.ToUpper(*country), *control
				if err := t.Validate(); err != nil {
					return badInput(err)
				}
				st, err := store.Open(ctx, *db)
				if err != nil {
					return err
				}
				defer st.Close()
				id, err := st.AddTarget(ctx, t)
				if errors.Is(err, store.ErrInvalid) {
					return badInput(err)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "target %d: %s\n", id, describeTarget(t))
				return nil
			}
		},
	}
}

func targetsRemoveCmd() *command {
	return &command{
		name:    "remove",
		summary: "remove a service or control target",
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			db := dbFlag(fs)
			target := targetFlags(fs)
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				t, err := target()
				if err != nil {
					return err
				}
				st, err := store.Open(ctx, *db)
				if err != nil {
					return err
				}
				defer st.Close()
				err = st.RemoveTarget(ctx, t)
				if errors.Is(err, store.ErrInvalid) {
					return badInput(err)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "removed %s\n", describeTarget(t))
				return nil
			}
		},
	}
}

func describeTarget(t store.Target) string {
	s := t.Kind + " " + t.Addr.String()
	if t.Port != 0 {
		s += fmt.Sprintf(" port %d", t.Port)
	}
	if t.Qname != "" {
		s += " zone " + t.Qname
	}
	if t.Control {
		s += " (control)"
	} else if t.Country != "" {
		s += " in " + t.Country
	}
	return s
}

func targetsListCmd() *command {
	return &command{
		name:    "list",
		summary: "list watched countries, or one country's networks and targets",
		setup: func(a *app, fs *flag.FlagSet) runFunc {
			db := dbFlag(fs)
			country := fs.String("country", "", "show this country's networks and targets")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				cc := strings.ToUpper(*country)
				if cc != "" {
					if err := store.CheckCountry(cc); err != nil {
						return badInput(fmt.Errorf("--country: %w", err))
					}
				}
				st, err := store.Open(ctx, *db)
				if err != nil {
					return err
				}
				defer st.Close()
				if cc == "" {
					return listCountries(ctx, a.stdout, st)
				}
				return listCountry(ctx, a.stdout, st, cc)
			}
		},
	}
}

func listCountries(ctx context.Context, w io.Writer, st *store.Store) error {
	cs, err := st.Countries(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COUNTRY\tNAME\tPREFIXES\tIPV6\tBLOCKS\tCENSUSED\tICMP\tTCP\tDNS")
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", c.Code, c.Name, c.Prefixes, c.Prefixes6, c.Blocks, c.BlocksCensused,
			c.Targets["icmp"], c.Targets["tcp"], c.Targets["dns"])
	}
	tw.Flush()
	ctl, err := st.Targets(ctx, "")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\n%d control targets\n", len(ctl))
	for _, t := range ctl {
		fmt.Fprintf(w, "  %s\n", describeTarget(t))
	}
	return nil
}

func listCountry(ctx context.Context, w io.Writer, st *store.Store, cc string) error {
	cs, err := st.Countries(ctx, cc)
	if err != nil {
		return err
	}
	if len(cs) == 0 {
		return fmt.Errorf("%s is not watched: import its address space first (cutoff targets import --country %s ...)", cc, cc)
	}
	c := cs[0]
	title := c.Code
	if c.Name != "" {
		title += " (" + c.Name + ")"
	}
	fmt.Fprintf(w, "%s: %d IPv4 and %d IPv6 prefixes, %d blocks (%d censused), targets: %d icmp, %d tcp, %d dns\n\n",
		title, c.Prefixes, c.Prefixes6, c.Blocks, c.BlocksCensused, c.Targets["icmp"], c.Targets["tcp"], c.Targets["dns"])
	ps, err := st.Prefixes(ctx, cc)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PREFIX\tREGISTRY\tSOURCE\tASN\tBLOCKS\tCENSUSED\tTARGETS")
	for _, p := range ps {
		asn := ""
		if p.ASN != 0 {
			asn = fmt.Sprintf("AS%d", p.ASN)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\n", p.Prefix, p.Registry, p.Source, asn, p.Blocks, p.BlocksCensused, p.Targets)
	}
	tw.Flush()
	ts, err := st.Targets(ctx, cc)
	if err != nil {
		return err
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].ID < ts[j].ID })
	if len(ts) > 0 {
		fmt.Fprintf(w, "\nservice targets:\n")
		for _, t := range ts {
			fmt.Fprintf(w, "  %s\n", describeTarget(t))
		}
	}
	return nil
}
