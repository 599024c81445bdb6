package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/cutoffnet/cutoff/prober"
)

// Config describes a lab: its name prefix, the vantages, the control
// targets in the transit, and the country's networks and hosts. The zero
// Config is not useful; start from Default or LoadConfig.
type Config struct {
	// Prefix names every namespace of the lab: "<prefix>-<role>". Two labs
	// with different prefixes never touch each other's namespaces.
	Prefix string `yaml:"prefix"`
	// StateDir holds per-lab state (the effective config, the serve
	// daemon's pid file and log) in StateDir/<prefix>.
	StateDir string `yaml:"state_dir"`
	// Seed picks which addresses of each network answer, so a config
	// always gives the same ground truth.
	Seed uint64 `yaml:"seed"`
	// Links is the pool the point-to-point link subnets (/30s) come from.
	Links netip.Prefix `yaml:"links"`
	// CutAnswer is what a router says about a destination behind a cut
	// link: "unreachable" (ICMP host unreachable, like a router that lost
	// the route) or "silent" (nothing: probes time out).
	CutAnswer string `yaml:"cut_answer"`

	Vantages []Vantage `yaml:"vantages"`
	Control  []Control `yaml:"control"`
	Country  Country   `yaml:"country"`
}

// Vantage is a vantage namespace with its own uplink into the transit.
type Vantage struct {
	Name string     `yaml:"name"`
	Addr netip.Addr `yaml:"addr"`
}

// Control is a control target: a host in the transit, outside the country,
// that every vantage can use to check its own connectivity. Every control
// target answers ICMP echo.
type Control struct {
	Addr netip.Addr `yaml:"addr"`
	TCP  []uint16   `yaml:"tcp"`
	// DNS, when set, is a zone this host serves authoritatively on port 53.
	DNS string `yaml:"dns"`
}

// Country is the simulated country behind the border.
type Country struct {
	Code     string    `yaml:"code"`
	Name     string    `yaml:"name"`
	Networks []Network `yaml:"networks"`
	// AnyIP, when valid, is a range of which every address answers ICMP
	// echo (a "local" route on the country router's loopback): a large
	// responsive space for benchmarks. Off by default.
	AnyIP netip.Prefix `yaml:"anyip"`
}

// Network is one of the country's networks, in its own namespace behind
// the country router so that it can be cut alone.
type Network struct {
	Name   string       `yaml:"name"`
	Prefix netip.Prefix `yaml:"prefix"`
	// Hosts is how many addresses of the prefix answer (the rest are
	// silent, as in real /24s).
	Hosts int `yaml:"hosts"`
	// TCPHosts of those hosts listen on every port of TCPPorts.
	TCPHosts int      `yaml:"tcp_hosts"`
	TCPPorts []uint16 `yaml:"tcp_ports"`
	// DNS: one host serves the zone "<name>.lab." authoritatively.
	DNS bool `yaml:"dns"`
	// FilterICMP makes the network ignore ICMP echo while its TCP and DNS
	// services still answer.
	FilterICMP bool `yaml:"filter_icmp"`
}

// Default is the lab of the project's tests and demo: two vantages, three
// control targets and a country of four /24s in 198.19.0.0/22 (like North
// Korea's 175.45.176.0/22), the last of which filters ICMP.
func Default() Config {
	nets := make([]Network, 4)
	for i := range nets {
		nets[i] = Network{
			Name:     fmt.Sprintf("net%d", i),
			Prefix:   netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i), 0}), 24),
			Hosts:    30,
			TCPHosts: 3,
			TCPPorts: []uint16{80, 443},
			DNS:      true,
		}
	}
	nets[3].Hosts, nets[3].TCPHosts, nets[3].FilterICMP = 5, 5, true
	return Config{
		Prefix:    "cutoff",
		StateDir:  "/run/cutoff-lab",
		Seed:      1,
		Links:     netip.MustParsePrefix("198.18.255.0/24"),
		CutAnswer: "unreachable",
		Vantages: []Vantage{
			{Name: "vp1", Addr: netip.MustParseAddr("198.18.1.2")},
			{Name: "vp2", Addr: netip.MustParseAddr("198.18.2.2")},
		},
		Control: []Control{
			{Addr: netip.MustParseAddr("198.18.0.10")},
			{Addr: netip.MustParseAddr("198.18.0.11"), TCP: []uint16{80}},
			{Addr: netip.MustParseAddr("198.18.0.12"), DNS: "control.lab."},
		},
		Country: Country{Code: "XL", Name: "Labland", Networks: nets},
	}
}

// LoadConfig reads a YAML lab file. Fields it leaves out keep Default's
// values; a list it gives (vantages, control, networks) replaces the
// default list whole. Unknown fields are errors.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("lab config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("lab config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML onto Default and validates the result.
func ParseConfig(b []byte) (Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Marshal renders the config as YAML that ParseConfig reads back.
func (c Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }

var (
	prefixRe = regexp.MustCompile(`^[a-z][a-z0-9]*(-[a-z0-9]+)*$`)
	// Role names become interface names (at most 15 bytes) and must not
	// contain '-', so that "<prefix>-<role>" splits at its last dash and
	// one lab's prefix can never claim another lab's namespaces.
	roleRe = regexp.MustCompile(`^[a-z][a-z0-9]{0,14}$`)
	zoneRe = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+$`)
)

// Fixed roles of the lab's namespaces.
const (
	roleTransit = "transit"
	roleBorder  = "border"
	roleCountry = "country"
	upIface     = "up" // every namespace's interface towards its parent
)

// Validate checks the config: names, addresses inside 198.18.0.0/15, no
// overlaps, host counts that fit.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !prefixRe.MatchString(c.Prefix) || len(c.Prefix) > 40 {
		bad("prefix %q: want lower-case letters, digits and inner dashes, at most 40 characters", c.Prefix)
	}
	if c.StateDir == "" || !strings.HasPrefix(c.StateDir, "/") {
		bad("state_dir %q: want an absolute path", c.StateDir)
	}
	if c.CutAnswer != "unreachable" && c.CutAnswer != "silent" {
		bad("cut_answer %q: want unreachable or silent", c.CutAnswer)
	}
	// Every address and prefix the lab uses, to reject overlaps.
	type use struct {
		p    netip.Prefix
		what string
	}
	var uses []use
	claim := func(p netip.Prefix, what string) {
		if !p.IsValid() {
			bad("%s: missing", what)
			return
		}
		if !p.Addr().Is4() {
			bad("%s: %s is not IPv4", what, p)
			return
		}
		if p != p.Masked() {
			bad("%s: %s has host bits set (want %s)", what, p, p.Masked())
			return
		}
		if !prober.Lab.Contains(p.Addr()) || p.Bits() < prober.Lab.Bits() {
			bad("%s: %s is outside the lab's %s", what, p, prober.Lab)
			return
		}
		for _, u := range uses {
			if u.p.Overlaps(p) {
				bad("%s: %s overlaps %s (%s)", what, p, u.p, u.what)
				return
			}
		}
		uses = append(uses, use{p, what})
	}
	host := func(a netip.Addr, what string) {
		if !a.IsValid() {
			bad("%s: missing address", what)
			return
		}
		claim(netip.PrefixFrom(a, 32), what)
	}
	if c.Links.IsValid() && c.Links.Bits() > 28 {
		bad("links %s: want a /28 or larger pool", c.Links)
	}
	claim(c.Links, "links")
	if n := c.linkCount(); c.Links.IsValid() && c.Links.Bits() <= 28 && n > 1<<(32-c.Links.Bits()-2) {
		bad("links %s: %d links need /30s, the pool holds %d", c.Links, n, 1<<(32-c.Links.Bits()-2))
	}
	roles := map[string]bool{roleTransit: true, roleBorder: true, roleCountry: true}
	role := func(name, what string) {
		switch {
		case !roleRe.MatchString(name) || name == upIface:
			bad("%s name %q: want a lower-case letter then letters or digits, at most 15, not %q", what, name, upIface)
		case roles[name]:
			bad("%s name %q: used twice (or a reserved role)", what, name)
		default:
			roles[name] = true
		}
	}
	if len(c.Vantages) == 0 {
		bad("vantages: want at least one")
	}
	for i, v := range c.Vantages {
		what := fmt.Sprintf("vantages[%d]", i)
		role(v.Name, what)
		host(v.Addr, what+" "+v.Name)
	}
	zones := map[string]bool{}
	zone := func(z, what string) {
		switch {
		case !zoneRe.MatchString(z):
			bad("%s: zone %q: want a lower-case, fully qualified name ending in '.'", what, z)
		case zones[z]:
			bad("%s: zone %q served twice", what, z)
		}
		zones[z] = true
	}
	for i, ct := range c.Control {
		what := fmt.Sprintf("control[%d]", i)
		host(ct.Addr, what)
		ports(ct.TCP, what, bad)
		if ct.DNS != "" {
			zone(ct.DNS, what)
		}
	}
	if len(c.Control) == 0 {
		bad("control: want at least one control target")
	}
	if c.Country.Code != "" && !regexp.MustCompile(`^[A-Z]{2}$`).MatchString(c.Country.Code) {
		bad("country.code %q: want two upper-case letters", c.Country.Code)
	}
	if len(c.Country.Networks) == 0 {
		bad("country.networks: want at least one")
	}
	for i, n := range c.Country.Networks {
		what := fmt.Sprintf("country.networks[%d]", i)
		role(n.Name, what)
		what += " " + n.Name
		claim(n.Prefix, what)
		if n.Prefix.IsValid() && (n.Prefix.Bits() > 30 || n.Prefix.Bits() < 16) {
			bad("%s: prefix %s: want /16 to /30", what, n.Prefix)
		}
		if size := usable(n.Prefix); n.Hosts < 0 || (n.Prefix.IsValid() && n.Hosts > size) {
			bad("%s: hosts %d: want 0 to %d", what, n.Hosts, size)
		}
		if n.TCPHosts < 0 || n.TCPHosts > n.Hosts {
			bad("%s: tcp_hosts %d: want 0 to hosts (%d)", what, n.TCPHosts, n.Hosts)
		}
		if n.TCPHosts > 0 && len(n.TCPPorts) == 0 {
			bad("%s: tcp_hosts %d but no tcp_ports", what, n.TCPHosts)
		}
		ports(n.TCPPorts, what, bad)
		if n.DNS {
			if n.Hosts == 0 {
				bad("%s: dns needs at least one host", what)
			}
			zone(n.Name+".lab.", what)
		}
	}
	if c.Country.AnyIP.IsValid() {
		claim(c.Country.AnyIP, "country.anyip")
	}
	return errors.Join(errs...)
}

func ports(ps []uint16, what string, bad func(string, ...any)) {
	seen := map[uint16]bool{}
	for _, p := range ps {
		if p == 0 || seen[p] || p == 53 {
			bad("%s: tcp port %d: want distinct ports 1-65535 other than 53 (DNS has its own)", what, p)
		}
		seen[p] = true
	}
}

// usable is the number of host addresses of p (without network and
// broadcast addresses).
func usable(p netip.Prefix) int {
	if !p.IsValid() || p.Bits() > 30 || p.Bits() < 16 {
		return 0
	}
	return 1<<(32-p.Bits()) - 2
}

// linkCount is how many point-to-point links the lab needs: one per
// vantage, transit–border, border–country, one per network.
func (c Config) linkCount() int { return len(c.Vantages) + 2 + len(c.Country.Networks) }
