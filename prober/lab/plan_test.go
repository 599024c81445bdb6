package lab

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		give string
		want string // substring of the error; "" for valid
	}{
		{name: "empty is the default", give: ""},
		{name: "override prefix and anyip", give: "prefix: mylab\ncountry:\n  anyip: 198.19.128.0/17\n"},
		{name: "unknown field", give: "prefixx: a\n", want: "field prefixx not found"},
		{name: "bad prefix", give: "prefix: My_Lab\n", want: `prefix "My_Lab"`},
		{name: "relative state dir", give: "state_dir: run/lab\n", want: "state_dir"},
		{name: "bad cut answer", give: "cut_answer: maybe\n", want: "cut_answer"},
		{name: "vantage outside the lab", give: "vantages:\n  - {name: vp1, addr: 10.0.0.1}\n", want: "outside the lab"},
		{name: "vantage named up", give: "vantages:\n  - {name: up, addr: 198.18.1.2}\n", want: `name "up"`},
		{name: "vantage named like a role", give: "vantages:\n  - {name: border, addr: 198.18.1.2}\n", want: "used twice"},
		{name: "dash in a role", give: "vantages:\n  - {name: vp-1, addr: 198.18.1.2}\n", want: `name "vp-1"`},
		{name: "control overlaps a vantage", give: "control:\n  - {addr: 198.18.1.2}\n", want: "overlaps"},
		{name: "anyip overlaps a network", give: "country:\n  anyip: 198.19.0.0/16\n", want: "overlaps"},
		{name: "links pool too small", give: "links: 198.18.255.0/28\n", want: "links need"},
		{name: "too many hosts", give: "country:\n  networks:\n    - {name: n0, prefix: 198.19.0.0/24, hosts: 255}\n", want: "hosts 255"},
		{name: "tcp hosts above hosts", give: "country:\n  networks:\n    - {name: n0, prefix: 198.19.0.0/24, hosts: 2, tcp_hosts: 3, tcp_ports: [80]}\n", want: "tcp_hosts 3"},
		{name: "tcp hosts without ports", give: "country:\n  networks:\n    - {name: n0, prefix: 198.19.0.0/24, hosts: 2, tcp_hosts: 1}\n", want: "no tcp_ports"},
		{name: "host bits set", give: "country:\n  networks:\n    - {name: n0, prefix: 198.19.0.1/24, hosts: 2}\n", want: "host bits"},
		{name: "zone not fully qualified", give: "control:\n  - {addr: 198.18.0.10, dns: example}\n", want: "zone"},
		{name: "bad country code", give: "country:\n  code: Xl\n", want: "country.code"},
		{name: "not an address", give: "vantages:\n  - {name: vp1, addr: nowhere}\n", want: "ParseAddr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.give))
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("ParseConfig(%q) = %v, want error containing %q", tt.give, err, tt.want)
			}
		})
	}
}

func TestConfigRoundTrip(t *testing.T) {
	cfg := Default()
	cfg.Country.AnyIP = netip.MustParsePrefix("198.19.128.0/17")
	cfg.CutAnswer = "silent"
	b, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseConfig(b)
	if err != nil {
		t.Fatalf("parse own output: %v\n%s", err, b)
	}
	b2, _ := got.Marshal()
	if string(b) != string(b2) {
		t.Errorf("round trip changed the config:\n%s\n---\n%s", b, b2)
	}
}

func TestPickHosts(t *testing.T) {
	nw := Default().Country.Networks[0]
	a, b := pickHosts(1, 0, nw), pickHosts(1, 0, nw)
	if !slices.EqualFunc(a, b, func(x, y Host) bool { return x.Addr == y.Addr }) {
		t.Error("the same seed picked different hosts")
	}
	if c := pickHosts(2, 0, nw); slices.EqualFunc(a, c, func(x, y Host) bool { return x.Addr == y.Addr }) {
		t.Error("another seed picked the same hosts")
	}
	seen := map[netip.Addr]bool{}
	tcp, dns := 0, 0
	for _, h := range a {
		if !nw.Prefix.Contains(h.Addr) || h.Addr == nw.Prefix.Addr() || h.Addr.As4()[3] == 255 || seen[h.Addr] {
			t.Errorf("bad or repeated host %s in %s", h.Addr, nw.Prefix)
		}
		seen[h.Addr] = true
		if len(h.TCPPorts) > 0 {
			tcp++
		}
		if h.DNSZone != "" {
			dns++
		}
	}
	if len(a) != nw.Hosts || tcp != nw.TCPHosts || dns != 1 {
		t.Errorf("got %d hosts, %d with TCP, %d with DNS; want %d, %d, 1", len(a), tcp, dns, nw.Hosts, nw.TCPHosts)
	}
}

// forward follows the plan's routes from node from towards dst, as the
// kernel would (local addresses first, then the longest prefix, then the
// lowest metric), skipping routes through cut links. It returns the node
// that delivers dst locally, or the reason the packet stops.
func forward(p *plan, from *node, dst netip.Addr, cut map[*link]bool) (*node, string) {
	n := from
	for hop := 0; hop < 16; hop++ {
		if slices.Contains(n.local, dst) || slices.ContainsFunc(n.anyIP, func(q netip.Prefix) bool { return q.Contains(dst) }) {
			return n, "delivered"
		}
		// A directly connected link subnet.
		next := (*node)(nil)
		for _, k := range append(slices.Clone(n.down), n.uplink) {
			if k == nil || cut[k] || !k.subnet.Contains(dst) {
				continue
			}
			if dst == k.upAddr {
				return k.up, "delivered"
			}
			if dst == k.downAddr {
				return k.down, "delivered"
			}
		}
		var best *route
		for _, r := range p.routes(n) {
			if !r.dst.Contains(dst) || (r.via != nil && cut[r.via]) {
				continue
			}
			if best == nil || r.dst.Bits() > best.dst.Bits() || r.dst.Bits() == best.dst.Bits() && r.metric < best.metric {
				best = &r
			}
		}
		switch {
		case best == nil:
			return nil, "no route at " + n.role
		case best.typ == routeUnreachable:
			return nil, "unreachable at " + n.role
		case best.typ == routeBlackhole:
			return nil, "blackhole at " + n.role
		case best.via.up == n:
			next = best.via.down
		default:
			next = best.via.up
		}
		n = next
	}
	return nil, "loop"
}

func TestRoutes(t *testing.T) {
	cfg := Default()
	cfg.Country.AnyIP = netip.MustParsePrefix("198.19.128.0/17")
	p, err := newPlan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Every local address and link address is reachable from every node.
	for _, from := range p.nodes {
		for _, to := range p.nodes {
			for _, a := range to.local {
				if got, why := forward(p, from, a, nil); got != to {
					t.Errorf("%s → %s (%s): %s", from.role, a, to.role, why)
				}
			}
		}
		for _, k := range p.links {
			if got, why := forward(p, from, k.downAddr, nil); got != k.down {
				t.Errorf("%s → %s (link to %s): %s", from.role, k.downAddr, k.down.role, why)
			}
		}
		if got, why := forward(p, from, netip.MustParseAddr("198.19.200.1"), nil); got == nil || got.role != roleCountry {
			t.Errorf("%s → anyip: %s", from.role, why)
		}
	}
	tests := []struct {
		name string
		from string
		cut  string
		to   netip.Addr
		want string
	}{
		{name: "silent address", from: "vp1", to: netip.MustParseAddr("198.19.0.255"), want: "blackhole at net0"},
		{name: "outside any network", from: "vp1", to: netip.MustParseAddr("198.19.4.1"), want: "no route at transit"},
		{name: "border cut", from: "vp1", cut: "border", to: p.hosts[1][0].Addr, want: "unreachable at border"},
		{name: "network cut", from: "vp2", cut: "net2", to: p.hosts[2][0].Addr, want: "unreachable at country"},
		{name: "network cut, other network", from: "vp2", cut: "net2", to: p.hosts[1][0].Addr, want: "delivered"},
		{name: "vantage cut, reply from the country", from: "net0", cut: "vp1", to: netip.MustParseAddr("198.18.1.2"), want: "unreachable at transit"},
		{name: "vantage cut, other vantage", from: "net0", cut: "vp1", to: netip.MustParseAddr("198.18.2.2"), want: "delivered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cut := map[*link]bool{}
			if tt.cut != "" {
				k, err := p.target(tt.cut)
				if err != nil {
					t.Fatal(err)
				}
				cut[k] = true
			}
			if _, got := forward(p, p.byRole[tt.from], tt.to, cut); got != tt.want {
				t.Errorf("%s → %s with %q cut: %s, want %s", tt.from, tt.to, tt.cut, got, tt.want)
			}
		})
	}
	// With silent cuts, the routers drop instead.
	cfg.CutAnswer = "silent"
	p, _ = newPlan(cfg)
	k, _ := p.target("border")
	if _, got := forward(p, p.byRole["vp1"], p.hosts[0][0].Addr, map[*link]bool{k: true}); got != "blackhole at border" {
		t.Errorf("silent border cut: %s, want blackhole at border", got)
	}
}

func TestTargets(t *testing.T) {
	p, err := newPlan(Default())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		give, want string
	}{
		{"border", "border"},
		{"vp2", "vantage:vp2"},
		{"net1", "net:198.19.1.0/24"},
		{"198.19.3.0/24", "net:198.19.3.0/24"},
	}
	for _, tt := range tests {
		k, err := p.target(tt.give)
		if err != nil || k.truthName != tt.want {
			t.Errorf("target(%q) = %v, %v; want %s", tt.give, k, err, tt.want)
		}
	}
	for _, bad := range []string{"transit", "country", "198.19.0.0/22", "vp3"} {
		if _, err := p.target(bad); err == nil {
			t.Errorf("target(%q) accepted", bad)
		}
	}
}
