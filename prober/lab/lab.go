// Package lab builds cutoff's test bed: a small internet inside Linux
// network namespaces, with a country that can be cut off on demand.
//
// A Config goes in (Default, or a YAML file through LoadConfig); Up turns
// it into namespaces named "<prefix>-<role>" joined by veth pairs, with
// addresses only from 198.18.0.0/15 and no link to the root namespace:
//
//	vp1 ──┐
//	vp2 ──┼── transit ── border ── country ─┬─ net0  198.19.0.0/24
//	      │   (control targets)             ├─ net1  198.19.1.0/24
//	                                        ├─ net2  198.19.2.0/24
//	                                        └─ net3  198.19.3.0/24 (filters ICMP)
//
// Ground truth leaves through Country, Networks, Responsive and
// ControlTargets; Serve holds the TCP listeners and DNS servers; faults
// (Cut, Restore, Loss, Delay, Decay) change the network, and Run plays a
// scenario of them while recording what happened when (Truth) for tests
// and benchmarks to score against.
//
// Everything needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cutoffnet/cutoff/prober"
)

// Lab is a running lab. Its methods are safe for concurrent use.
type Lab struct {
	cfg  Config
	plan *plan
	ns   map[string]netns.NsHandle
	nl   map[string]*netlink.Handle

	mu     sync.Mutex
	decays map[string]*decayRun // running decays by target
}

// ErrNotUp means the lab's namespaces or state are missing.
var ErrNotUp = errors.New("lab is not up")

// Up creates the lab described by cfg, or repairs it to that description
// if it is already up: running Up twice is harmless. Repairing ends every
// fault (links come up, loss rules go, decayed hosts come back). If Up
// fails on a lab that did not exist before, it removes what it made.
func Up(ctx context.Context, cfg Config) (*Lab, error) {
	p, err := newPlan(cfg)
	if err != nil {
		return nil, fmt.Errorf("lab config: %w", err)
	}
	existing, err := namespacesOf(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	l, err := up(ctx, p)
	if err != nil && len(existing) == 0 {
		if derr := Down(context.WithoutCancel(ctx), cfg); derr != nil {
			err = errors.Join(err, derr)
		}
	}
	return l, err
}

func up(ctx context.Context, p *plan) (*Lab, error) {
	if err := writeState(p.cfg); err != nil {
		return nil, err
	}
	if err := ensureNSDir(); err != nil {
		return nil, err
	}
	for _, n := range p.nodes {
		if err := createNamespace(p.namespace(n.role)); err != nil {
			return nil, err
		}
	}
	l, err := open(p)
	if err != nil {
		return nil, err
	}
	steps := []func() error{
		func() error { return l.eachNode(ctx, l.configureNode) },
		func() error {
			for _, k := range p.links {
				if err := l.createLink(k); err != nil {
					return err
				}
				if err := l.configureLink(k); err != nil {
					return err
				}
			}
			return nil
		},
		func() error { return l.eachNode(ctx, l.applyRoutes) },
		func() error { return l.eachNode(ctx, l.clearFaults) },
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			l.close()
			return nil, err
		}
		if err := s(); err != nil {
			l.close()
			return nil, err
		}
	}
	return l, nil
}

// Open attaches to the lab cfg describes, which must be up. It changes
// nothing.
func Open(cfg Config) (*Lab, error) {
	p, err := newPlan(cfg)
	if err != nil {
		return nil, fmt.Errorf("lab config: %w", err)
	}
	return open(p)
}

// Attach opens the lab with this prefix using the config its Up saved in
// stateDir.
func Attach(stateDir, prefix string) (*Lab, error) {
	cfg, err := SavedConfig(stateDir, prefix)
	if err != nil {
		return nil, err
	}
	return Open(cfg)
}

// SavedConfig returns the config the lab with this prefix was brought up
// with.
func SavedConfig(stateDir, prefix string) (Config, error) {
	path := filepath.Join(stateDir, prefix, "config.yaml")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return Config{}, fmt.Errorf("%w: no %s (run 'cutoff lab up --prefix %s')", ErrNotUp, path, prefix)
	}
	return LoadConfig(path)
}

func open(p *plan) (*Lab, error) {
	l := &Lab{cfg: p.cfg, plan: p, ns: map[string]netns.NsHandle{}, nl: map[string]*netlink.Handle{},
		decays: map[string]*decayRun{}}
	for _, n := range p.nodes {
		name := p.namespace(n.role)
		h, err := netns.GetFromPath(filepath.Join(nsDir, name))
		if err != nil {
			l.close()
			return nil, fmt.Errorf("%w: namespace %s: %w", ErrNotUp, name, err)
		}
		l.ns[n.role] = h
		nh, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("netlink in %s: %w", name, err)
		}
		l.nl[n.role] = nh
	}
	return l, nil
}

func (l *Lab) close() {
	for _, h := range l.nl {
		h.Close()
	}
	for _, h := range l.ns {
		h.Close()
	}
	l.nl, l.ns = nil, nil
}

// Close releases the lab's handles and stops its running decays, leaving
// the lab up.
func (l *Lab) Close() {
	l.stopDecays()
	l.close()
}

// Down removes the lab: it stops the serve daemon, deletes every
// namespace of the lab's prefix (which deletes their links) and the state
// directory.
func (l *Lab) Down(ctx context.Context) error {
	l.Close()
	return Down(ctx, l.cfg)
}

// Down removes the lab with cfg's prefix, whatever state it is in: it
// finds the namespaces by name, so it also cleans up after a crash. It
// never touches a namespace of another prefix.
func Down(ctx context.Context, cfg Config) error {
	if !prefixRe.MatchString(cfg.Prefix) {
		return fmt.Errorf("lab down: bad prefix %q", cfg.Prefix)
	}
	var errs []error
	dir := stateDir(cfg)
	if err := StopServe(ctx, dir); err != nil {
		errs = append(errs, err)
	}
	names, err := namespacesOf(cfg.Prefix)
	if err != nil {
		errs = append(errs, err)
	}
	for _, n := range names {
		if err := deleteNamespace(n); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove state: %w", err))
		}
	}
	return errors.Join(errs...)
}

func stateDir(cfg Config) string { return filepath.Join(cfg.StateDir, cfg.Prefix) }

// StateDir is where the lab keeps its saved config, pid file and log.
func (l *Lab) StateDir() string { return stateDir(l.cfg) }

func writeState(cfg Config) error {
	dir := stateDir(cfg)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lab state: %w", err)
	}
	b, err := cfg.Marshal()
	if err != nil {
		return fmt.Errorf("lab state: %w", err)
	}
	path := filepath.Join(dir, "config.yaml")
	if old, err := os.ReadFile(path); err == nil && !bytes.Equal(old, b) {
		if names, _ := namespacesOf(cfg.Prefix); len(names) > 0 {
			return fmt.Errorf("lab %s is up with a different config (%s); bring it down first", cfg.Prefix, path)
		}
	}
	return writeFileAtomic(path, b)
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (l *Lab) eachNode(ctx context.Context, fn func(*node) error) error {
	for _, n := range l.plan.nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(n); err != nil {
			return fmt.Errorf("%s: %w", l.plan.namespace(n.role), err)
		}
	}
	return nil
}

// Large enough that the kernel never caps a measurement: ICMP errors
// (unreachable, time exceeded, port unreachable) are rate limited per
// namespace, by default to 1000/s with a burst of 50 and one per second
// per destination.
const icmpLimit = "100000000"

// configureNode sets the namespace's kernel parameters and its loopback
// addresses.
func (l *Lab) configureNode(n *node) error {
	ctls := [][2]string{
		{"net.ipv4.icmp_ratelimit", "0"},
		{"net.ipv4.icmp_msgs_per_sec", icmpLimit},
		{"net.ipv4.icmp_msgs_burst", icmpLimit},
		{"net.ipv4.icmp_echo_ignore_all", "0"},
	}
	switch n.kind {
	case kindTransit, kindBorder, kindCountry:
		ctls = append(ctls, [2]string{"net.ipv4.ip_forward", "1"})
	case kindVantage:
		// Let any user open unprivileged ICMP (ping) sockets here, so that
		// path of the prober can be tested; the default "1 0" refuses even
		// root.
		ctls = append(ctls, [2]string{"net.ipv4.ping_group_range", "0 2147483647"})
	case kindNetwork:
		if l.cfg.Country.Networks[n.network].FilterICMP {
			ctls[3][1] = "1"
		}
	}
	err := inNamespace(l.ns[n.role], func() error {
		// No IPv6: the lab is IPv4 and router solicitations would be noise.
		for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
			if err := sysctl(k, "1", true); err != nil {
				return err
			}
		}
		for _, c := range ctls {
			if err := sysctl(c[0], c[1], false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	h := l.nl[n.role]
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	for _, a := range n.local {
		if err := h.AddrReplace(lo, hostAddr(a)); err != nil {
			return fmt.Errorf("add %s: %w", a, err)
		}
	}
	for _, p := range n.anyIP {
		r := &netlink.Route{Dst: ipNet(p), LinkIndex: lo.Attrs().Index, Table: unix.RT_TABLE_LOCAL,
			Type: unix.RTN_LOCAL, Scope: unix.RT_SCOPE_HOST}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("anyip route %s: %w", p, err)
		}
	}
	return nil
}

// createLink creates the veth pair of k directly between its two
// namespaces: no end ever exists in the root namespace.
func (l *Lab) createLink(k *link) error {
	h := l.nl[k.up.role]
	if _, err := h.LinkByName(k.upIface); err == nil {
		return nil
	}
	v := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: k.upIface, HardwareAddr: k.upMAC},
		PeerName:         upIface,
		PeerHardwareAddr: k.downMAC,
		PeerNamespace:    netlink.NsFd(l.ns[k.down.role]),
	}
	if err := h.LinkAdd(v); err != nil {
		return fmt.Errorf("create link %s–%s: %w", l.plan.namespace(k.up.role), l.plan.namespace(k.down.role), err)
	}
	return nil
}

// configureLink brings both ends of k up with their addresses and a
// permanent neighbour entry for the other end, so no packet waits for (or
// is lost to) ARP.
func (l *Lab) configureLink(k *link) error {
	if err := l.configureEnd(k.up.role, k.upIface, k.upAddr, k.downAddr, k.downMAC); err != nil {
		return err
	}
	return l.configureEnd(k.down.role, upIface, k.downAddr, k.upAddr, k.upMAC)
}

func (l *Lab) configureEnd(role, iface string, addr, peer netip.Addr, peerMAC net.HardwareAddr) error {
	h := l.nl[role]
	lk, err := h.LinkByName(iface)
	if err != nil {
		return fmt.Errorf("%s: link %s: %w", l.plan.namespace(role), iface, err)
	}
	a := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(addr, 30))}
	if err := h.AddrReplace(lk, a); err != nil {
		return fmt.Errorf("%s: %s address %s: %w", l.plan.namespace(role), iface, addr, err)
	}
	if err := h.LinkSetUp(lk); err != nil {
		return fmt.Errorf("%s: %s up: %w", l.plan.namespace(role), iface, err)
	}
	n := &netlink.Neigh{LinkIndex: lk.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: peer.AsSlice(), HardwareAddr: peerMAC}
	if err := h.NeighSet(n); err != nil {
		return fmt.Errorf("%s: %s neighbour %s: %w", l.plan.namespace(role), iface, peer, err)
	}
	return nil
}

// applyRoutes writes n's routes, replacing what is there, so it also
// restores the routes the kernel flushed when a link went down.
func (l *Lab) applyRoutes(n *node) error {
	h := l.nl[n.role]
	for _, r := range l.plan.routes(n) {
		nr := &netlink.Route{Dst: ipNet(r.dst), Priority: r.metric}
		switch r.typ {
		case routeVia:
			name := upIface
			gw := r.via.upAddr
			if r.via.up == n {
				name, gw = r.via.upIface, r.via.downAddr
			}
			lk, err := h.LinkByName(name)
			if err != nil {
				return fmt.Errorf("route %s: link %s: %w", r.dst, name, err)
			}
			if lk.Attrs().Flags&net.FlagUp == 0 {
				continue // cut: the fallback route answers for it
			}
			nr.LinkIndex, nr.Gw = lk.Attrs().Index, gw.AsSlice()
			if r.src.IsValid() {
				nr.Src = r.src.AsSlice()
			}
		case routeUnreachable:
			nr.Type = unix.RTN_UNREACHABLE
		case routeBlackhole:
			nr.Type = unix.RTN_BLACKHOLE
		}
		if err := h.RouteReplace(nr); err != nil {
			return fmt.Errorf("route %s: %w", r.dst, err)
		}
	}
	return nil
}

func hostAddr(a netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(a, 32))}
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Config is the lab's configuration.
func (l *Lab) Config() Config { return l.cfg }

// Prefix is the lab's name prefix.
func (l *Lab) Prefix() string { return l.cfg.Prefix }

// Namespace names a role's namespace, e.g. "vp1" → "cutoff-vp1".
func (l *Lab) Namespace(role string) string { return l.plan.namespace(role) }

// Vantages lists the vantage points.
func (l *Lab) Vantages() []Vantage { return slices.Clone(l.cfg.Vantages) }

// Targets lists the names faults accept: "border", each vantage, each
// network.
func (l *Lab) Targets() []string {
	var out []string
	for _, k := range l.plan.links {
		if k.faultName != "" {
			out = append(out, k.faultName)
		}
	}
	return out
}

// Do runs fn on an OS thread inside the role's namespace. Sockets fn opens
// belong to that namespace for their whole life, so fn can open a socket
// there and hand it out. Goroutines fn starts run in the caller's
// namespace, not the lab's.
func (l *Lab) Do(role string, fn func() error) error {
	ns, ok := l.ns[role]
	if !ok {
		return fmt.Errorf("lab %s has no namespace %q", l.cfg.Prefix, role)
	}
	return inNamespace(ns, fn)
}

// Command prepares a command to run inside the role's namespace through
// `ip netns exec`. It shares the filesystem, so it reaches PostgreSQL over
// a unix socket.
func (l *Lab) Command(ctx context.Context, role, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.Namespace(role), name}, args...)...)
}

// NetworkInfo is the ground truth about one network of the country.
type NetworkInfo struct {
	Name       string       `json:"name"`
	Namespace  string       `json:"namespace"`
	Prefix     netip.Prefix `json:"prefix"`
	FilterICMP bool         `json:"filter_icmp"`
	Hosts      []Host       `json:"hosts"`
}

// CountryInfo is the ground truth about the country.
type CountryInfo struct {
	Code string `json:"code"`
	Name string `json:"name"`
	// Prefixes are the country's address space: its networks (and the
	// AnyIP range when configured), for `cutoff targets import --cidr`.
	Prefixes []netip.Prefix `json:"prefixes"`
	Networks []NetworkInfo  `json:"networks"`
	AnyIP    netip.Prefix   `json:"anyip,omitzero"`
}

// Networks describes each network and the hosts in it that answer.
func (l *Lab) Networks() []NetworkInfo {
	out := make([]NetworkInfo, len(l.cfg.Country.Networks))
	for i, nw := range l.cfg.Country.Networks {
		hosts := make([]Host, len(l.plan.hosts[i]))
		for j, h := range l.plan.hosts[i] {
			h.TCPPorts = slices.Clone(h.TCPPorts)
			hosts[j] = h
		}
		out[i] = NetworkInfo{Name: nw.Name, Namespace: l.Namespace(nw.Name), Prefix: nw.Prefix,
			FilterICMP: nw.FilterICMP, Hosts: hosts}
	}
	return out
}

// Country describes the country.
func (l *Lab) Country() CountryInfo {
	c := CountryInfo{Code: l.cfg.Country.Code, Name: l.cfg.Country.Name, Networks: l.Networks(), AnyIP: l.cfg.Country.AnyIP}
	for _, nw := range l.cfg.Country.Networks {
		c.Prefixes = append(c.Prefixes, nw.Prefix)
	}
	if c.AnyIP.IsValid() {
		c.Prefixes = append(c.Prefixes, c.AnyIP)
	}
	return c
}

// Responsive lists the country's targets of one kind that answer while no
// fault is active: ICMP echo responders, TCP listeners (addr:port) and DNS
// servers (addr:53 with their zone). The AnyIP range is not listed.
func (l *Lab) Responsive(kind prober.Kind) []prober.Target {
	var out []prober.Target
	for _, hosts := range l.plan.hosts {
		for _, h := range hosts {
			out = append(out, hostTargets(kind, h.Addr, h.ICMP, h.TCPPorts, h.DNSZone)...)
		}
	}
	return out
}

// ControlTargets lists the control targets in the transit, of every kind:
// each answers ICMP echo, some listen on TCP, some serve DNS.
func (l *Lab) ControlTargets() []prober.Target {
	var out []prober.Target
	for _, k := range []prober.Kind{prober.KindICMP, prober.KindTCP, prober.KindDNS} {
		for _, c := range l.cfg.Control {
			out = append(out, hostTargets(k, c.Addr, true, c.TCP, c.DNS)...)
		}
	}
	return out
}

func hostTargets(kind prober.Kind, a netip.Addr, icmp bool, ports []uint16, zone string) []prober.Target {
	var out []prober.Target
	switch kind {
	case prober.KindICMP:
		if icmp {
			out = append(out, prober.Target{Kind: kind, Addr: a})
		}
	case prober.KindTCP:
		for _, p := range ports {
			out = append(out, prober.Target{Kind: kind, Addr: a, Port: p})
		}
	case prober.KindDNS:
		if zone != "" {
			out = append(out, prober.Target{Kind: kind, Addr: a, Port: 53, Qname: zone})
		}
	}
	return out
}
