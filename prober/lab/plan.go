package lab

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"

	"github.com/cutoffnet/cutoff/prober"
)

// The plan is everything the config implies, computed without touching the
// system: namespaces (nodes) in a tree rooted at the transit, the links
// between them with their addresses, and each node's local addresses and
// routes. Up applies it; Validate guarantees it is computable.

type nodeKind uint8

const (
	kindTransit nodeKind = iota
	kindVantage
	kindBorder
	kindCountry
	kindNetwork
)

type node struct {
	role   string
	kind   nodeKind
	uplink *link   // nil for the transit
	down   []*link // links to children
	// local addresses (/32) on the loopback.
	local []netip.Addr
	// anyIP: "local" routes on the loopback (every address answers).
	anyIP []netip.Prefix
	// blackhole: prefixes whose unassigned addresses are silent.
	blackhole []netip.Prefix
	// owned: prefixes this node originates, routed towards it by every
	// node above it.
	owned []netip.Prefix
	// src: preferred source address of the uplink route (vantages).
	src netip.Addr
	// network index into Config.Country.Networks, for kindNetwork.
	network int
}

type link struct {
	index      int
	up, down   *node        // upstream (towards the transit) and downstream node
	subnet     netip.Prefix // a /30
	upAddr     netip.Addr   // .1 of the /30, in the upstream node
	downAddr   netip.Addr   // .2, in the downstream node
	upIface    string       // name in the upstream node: the downstream node's role
	upMAC      net.HardwareAddr
	downMAC    net.HardwareAddr
	faultName  string // the fault target that cuts this link
	truthName  string // how lab_truth names that target
	affected   []netip.Prefix
	downstream string // role of the downstream node
}

type plan struct {
	cfg    Config
	nodes  []*node // parents before children
	links  []*link
	byRole map[string]*node
	// targets maps fault target names (border, vp1, net0, ...) to links.
	targets map[string]*link
	hosts   [][]Host // per network, the responsive hosts
}

// Host is an address of the country that answers.
type Host struct {
	Addr netip.Addr `json:"addr"`
	// ICMP: answers echo requests (false in a network that filters ICMP).
	ICMP     bool     `json:"icmp"`
	TCPPorts []uint16 `json:"tcp_ports,omitempty"`
	// DNSZone is the zone this host serves authoritatively on port 53.
	DNSZone string `json:"dns_zone,omitempty"`
}

func newPlan(cfg Config) (*plan, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &plan{cfg: cfg, byRole: map[string]*node{}, targets: map[string]*link{}}
	add := func(n *node) *node {
		p.nodes = append(p.nodes, n)
		p.byRole[n.role] = n
		return n
	}
	connect := func(up, down *node) *link {
		i := len(p.links)
		a := func(k uint32) netip.Addr { return addrAdd(cfg.Links.Addr(), uint32(i)*4+k) }
		l := &link{
			index: i, up: up, down: down,
			subnet: netip.PrefixFrom(a(0), 30), upAddr: a(1), downAddr: a(2),
			upIface: down.role, downstream: down.role,
			// Locally administered unicast MACs, fixed per link, so that
			// permanent neighbour entries can be written without asking
			// the kernel.
			upMAC:   net.HardwareAddr{0x02, 0xc6, 0x12, 0xff, byte(i), 1},
			downMAC: net.HardwareAddr{0x02, 0xc6, 0x12, 0xff, byte(i), 2},
		}
		up.down = append(up.down, l)
		down.uplink = l
		p.links = append(p.links, l)
		return l
	}

	transit := add(&node{role: roleTransit, kind: kindTransit})
	for _, ct := range cfg.Control {
		transit.local = append(transit.local, ct.Addr)
	}
	for _, v := range cfg.Vantages {
		n := add(&node{role: v.Name, kind: kindVantage, local: []netip.Addr{v.Addr}, src: v.Addr,
			owned: []netip.Prefix{netip.PrefixFrom(v.Addr, 32)}})
		l := connect(transit, n)
		l.faultName, l.truthName = v.Name, "vantage:"+v.Name
	}
	border := add(&node{role: roleBorder, kind: kindBorder})
	connect(transit, border)
	country := add(&node{role: roleCountry, kind: kindCountry})
	bl := connect(border, country)
	bl.faultName, bl.truthName = "border", "border"
	if a := cfg.Country.AnyIP; a.IsValid() {
		country.anyIP = []netip.Prefix{a}
		country.owned = []netip.Prefix{a}
	}
	for i, nw := range cfg.Country.Networks {
		hosts := pickHosts(cfg.Seed, i, nw)
		p.hosts = append(p.hosts, hosts)
		n := add(&node{role: nw.Name, kind: kindNetwork, network: i,
			owned: []netip.Prefix{nw.Prefix}, blackhole: []netip.Prefix{nw.Prefix}})
		for _, h := range hosts {
			n.local = append(n.local, h.Addr)
		}
		l := connect(country, n)
		l.faultName, l.truthName = nw.Name, "net:"+nw.Prefix.String()
		l.affected = []netip.Prefix{nw.Prefix}
		bl.affected = append(bl.affected, nw.Prefix)
	}
	bl.affected = append(bl.affected, country.anyIP...)
	for _, l := range p.links {
		if l.faultName != "" {
			p.targets[l.faultName] = l
		}
	}
	return p, nil
}

// pickHosts chooses a network's responsive addresses deterministically from
// the seed: which addresses answer, which of them listen on TCP, and which
// one serves DNS.
func pickHosts(seed uint64, index int, nw Network) []Host {
	size := usable(nw.Prefix)
	r := rand.New(rand.NewPCG(seed, uint64(index)+1))
	offs := r.Perm(size)[:nw.Hosts]
	base := nw.Prefix.Addr()
	hosts := make([]Host, len(offs))
	for i, o := range offs {
		hosts[i] = Host{Addr: addrAdd(base, uint32(o)+1), ICMP: !nw.FilterICMP} // +1 skips the network address
		if i < nw.TCPHosts {
			hosts[i].TCPPorts = slices.Clone(nw.TCPPorts)
		}
	}
	if nw.DNS && len(hosts) > 0 {
		hosts[0].DNSZone = nw.Name + ".lab."
	}
	slices.SortFunc(hosts, func(a, b Host) int { return a.Addr.Compare(b.Addr) })
	return hosts
}

// subtree lists every prefix reachable through n: what it and its
// descendants own, and the link subnets below it.
func (n *node) subtree() []netip.Prefix {
	out := slices.Clone(n.owned)
	for _, l := range n.down {
		out = append(out, l.subnet)
		out = append(out, l.down.subtree()...)
	}
	return out
}

// route is one route a node needs.
type route struct {
	dst    netip.Prefix
	via    *link // nil for a route without a next hop
	typ    routeType
	metric int
	src    netip.Addr
}

type routeType uint8

const (
	routeVia routeType = iota
	routeUnreachable
	routeBlackhole
)

// fallbackMetric ranks the catch-all routes below the real ones: when a
// link goes down the kernel flushes the routes through it and the
// fallback, which has no device, takes over. Without it the packet would
// follow the node's uplink route back up and loop until its TTL ran out.
const fallbackMetric = 4000

// routes lists n's routes: towards each child every prefix below it (with
// a fallback for when that link is cut), its own blackholes, and a route
// for the lab's whole range through its uplink. No node gets a default
// route, so anything outside the lab is unreachable before a packet is
// formed.
func (p *plan) routes(n *node) []route {
	var out []route
	fallback := routeUnreachable
	if p.cfg.CutAnswer == "silent" {
		fallback = routeBlackhole
	}
	for _, l := range n.down {
		for _, dst := range l.down.subtree() {
			out = append(out, route{dst: dst, via: l})
			out = append(out, route{dst: dst, typ: fallback, metric: fallbackMetric})
		}
	}
	for _, b := range n.blackhole {
		out = append(out, route{dst: b, typ: routeBlackhole})
	}
	if n.uplink != nil {
		out = append(out, route{dst: prober.Lab, via: n.uplink, src: n.src})
	}
	return out
}

// namespace is the name of a role's namespace.
func (p *plan) namespace(role string) string { return p.cfg.Prefix + "-" + role }

func (p *plan) target(name string) (*link, error) {
	if l, ok := p.targets[name]; ok {
		return l, nil
	}
	// A network may also be named by its prefix.
	if pf, err := netip.ParsePrefix(name); err == nil {
		for _, l := range p.links {
			if len(l.affected) == 1 && l.affected[0] == pf && l.down.kind == kindNetwork {
				return l, nil
			}
		}
	}
	return nil, fmt.Errorf("unknown lab target %q (want %s)", name, p.targetNames())
}

func (p *plan) targetNames() string {
	var names []string
	for _, l := range p.links {
		if l.faultName != "" {
			names = append(names, l.faultName)
		}
	}
	return fmt.Sprint(names)
}

// addrAdd returns the IPv4 address n after a.
func addrAdd(a netip.Addr, n uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) + n
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
