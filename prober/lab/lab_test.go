package lab_test

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/labtest"
)

func addrs(ts []prober.Target) []netip.Addr {
	var out []netip.Addr
	for _, t := range ts {
		out = append(out, t.Addr)
	}
	return out
}

// silent lists the country's addresses that must not answer ICMP echo:
// every address of a network that is not a responsive host, and every
// address of a network that filters ICMP.
func silent(l *lab.Lab) []netip.Addr {
	var out []netip.Addr
	for _, nw := range l.Networks() {
		live := map[netip.Addr]bool{}
		for _, h := range nw.Hosts {
			live[h.Addr] = h.ICMP
		}
		for a := nw.Prefix.Addr(); nw.Prefix.Contains(a); a = a.Next() {
			if !live[a] {
				out = append(out, a)
			}
		}
	}
	return out
}

func netAddrs(l *lab.Lab, name string) []netip.Addr {
	for _, nw := range l.Networks() {
		if nw.Name == name {
			var out []netip.Addr
			for _, h := range nw.Hosts {
				out = append(out, h.Addr)
			}
			return out
		}
	}
	return nil
}

func controlICMP(l *lab.Lab) []netip.Addr {
	var out []netip.Addr
	for _, t := range l.ControlTargets() {
		if t.Kind == prober.KindICMP {
			out = append(out, t.Addr)
		}
	}
	return out
}

// answered pings each address once from the vantage and returns those
// that replied.
func answered(t *testing.T, l *lab.Lab, vantage string, as []netip.Addr) []netip.Addr {
	t.Helper()
	got, err := labtest.Ping(context.Background(), l, vantage, "ip4:icmp", as, 1, 700*time.Millisecond)
	if err != nil {
		t.Fatalf("ping from %s: %v", vantage, err)
	}
	var out []netip.Addr
	for _, a := range as {
		if got[a] > 0 {
			out = append(out, a)
		}
	}
	return out
}

func wantAll(t *testing.T, l *lab.Lab, vantage, what string, as []netip.Addr) {
	t.Helper()
	if got := answered(t, l, vantage, as); len(got) != len(as) {
		t.Errorf("%s from %s: %d of %d answered, want all", what, vantage, len(got), len(as))
	}
}

func wantNone(t *testing.T, l *lab.Lab, vantage, what string, as []netip.Addr) {
	t.Helper()
	if got := answered(t, l, vantage, as); len(got) != 0 {
		t.Errorf("%s from %s: %d of %d answered (%v…), want none", what, vantage, len(got), len(as), got[0])
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestLab checks the default lab end to end: who answers what from where,
// and how each fault changes it. Subtests share one lab and run in order.
func TestLab(t *testing.T) {
	l := labtest.Up(t, lab.Default())
	ctx := context.Background()
	icmpHosts := addrs(l.Responsive(prober.KindICMP))
	control := controlICMP(l)

	t.Run("ground truth", func(t *testing.T) {
		nets := l.Networks()
		if len(nets) != 4 || len(icmpHosts) != 90 {
			t.Fatalf("got %d networks and %d ICMP hosts, want 4 and 90", len(nets), len(icmpHosts))
		}
		if n := len(l.Responsive(prober.KindTCP)); n != 3*3*2+5*2 {
			t.Errorf("got %d TCP targets, want %d", n, 3*3*2+5*2)
		}
		if n := len(l.Responsive(prober.KindDNS)); n != 4 {
			t.Errorf("got %d DNS targets, want 4", n)
		}
		if !nets[3].FilterICMP || nets[3].Prefix != netip.MustParsePrefix("198.19.3.0/24") {
			t.Errorf("net3 = %+v, want 198.19.3.0/24 filtering ICMP", nets[3])
		}
		for _, a := range append(slices.Clone(icmpHosts), control...) {
			if !prober.Lab.Contains(a) {
				t.Errorf("%s is outside the lab", a)
			}
		}
	})

	t.Run("no link to the root namespace", func(t *testing.T) {
		checkIsolated(t, l)
	})

	// The kernel's ICMP limits are raised in every namespace (else a
	// router's unreachables and a host's echo replies would be capped).
	t.Run("kernel limits raised", func(t *testing.T) {
		want := map[string]string{"net/ipv4/icmp_ratelimit": "0", "net/ipv4/icmp_msgs_per_sec": "100000000", "net/ipv4/icmp_msgs_burst": "100000000"}
		for _, role := range []string{"vp1", "vp2", "transit", "border", "country", "net0", "net3"} {
			err := l.Do(role, func() error {
				for key, v := range want {
					b, err := os.ReadFile("/proc/sys/" + key)
					if err != nil {
						return err
					}
					if got := strings.TrimSpace(string(b)); got != v {
						t.Errorf("%s: %s = %s, want %s", role, key, got, v)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("icmp", func(t *testing.T) {
		wantAll(t, l, "vp1", "responsive hosts", icmpHosts)
		wantAll(t, l, "vp1", "control targets", control)
		wantNone(t, l, "vp1", "silent and filtered addresses", silent(l))
		wantAll(t, l, "vp2", "responsive hosts", icmpHosts)
	})

	t.Run("unprivileged ping socket", func(t *testing.T) {
		got, err := labtest.Ping(ctx, l, "vp2", "udp4", icmpHosts, 1, 700*time.Millisecond)
		must(t, err)
		if len(got) != len(icmpHosts) {
			t.Errorf("%d of %d answered over a ping socket", len(got), len(icmpHosts))
		}
	})

	t.Run("tcp", func(t *testing.T) {
		tcp := append(l.Responsive(prober.KindTCP), l.ControlTargets()...)
		n := 0
		for _, tg := range tcp {
			if tg.Kind != prober.KindTCP {
				continue
			}
			n++
			if err := labtest.Dial(ctx, l, "vp1", netip.AddrPortFrom(tg.Addr, tg.Port), time.Second); err != nil {
				t.Errorf("connect %s: %v", tg, err)
			}
		}
		if n < 20 {
			t.Errorf("only %d TCP targets", n)
		}
		// A responsive host refuses a closed port; a silent address says
		// nothing.
		h := l.Responsive(prober.KindTCP)[0].Addr
		if err := labtest.Dial(ctx, l, "vp1", netip.AddrPortFrom(h, 81), time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect %s:81 = %v, want connection refused", h, err)
		}
		s := silent(l)[1]
		if err := labtest.Dial(ctx, l, "vp1", netip.AddrPortFrom(s, 80), 300*time.Millisecond); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("connect silent %s:80 = %v, want a timeout", s, err)
		}
	})

	t.Run("dns", func(t *testing.T) {
		for _, tg := range append(l.Responsive(prober.KindDNS), l.ControlTargets()...) {
			if tg.Kind != prober.KindDNS {
				continue
			}
			r, err := labtest.Query(ctx, l, "vp1", tg.Addr, tg.Qname, dns.TypeSOA, time.Second)
			if err != nil {
				t.Errorf("query %s: %v", tg, err)
				continue
			}
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeSOA {
				t.Errorf("query %s: got %v", tg, r)
			}
			r, err = labtest.Query(ctx, l, "vp1", tg.Addr, "ns."+tg.Qname, dns.TypeA, time.Second)
			if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != tg.Addr.String() {
				t.Errorf("query A ns.%s: %v %v", tg.Qname, r, err)
			}
			r, err = labtest.Query(ctx, l, "vp1", tg.Addr, "example.com.", dns.TypeA, time.Second)
			if err != nil || r.Rcode != dns.RcodeRefused {
				t.Errorf("query outside the zone: %v %v, want REFUSED", r, err)
			}
		}
	})

	// services reports, for each TCP and DNS target of the country (or
	// the control targets), whether vantage reached it.
	services := func(vantage string, ts []prober.Target) (reached, missed int) {
		for _, tg := range ts {
			var err error
			switch tg.Kind {
			case prober.KindTCP:
				err = labtest.Dial(ctx, l, vantage, netip.AddrPortFrom(tg.Addr, tg.Port), 300*time.Millisecond)
			case prober.KindDNS:
				_, err = labtest.Query(ctx, l, vantage, tg.Addr, tg.Qname, dns.TypeSOA, 300*time.Millisecond)
			default:
				continue
			}
			if err == nil {
				reached++
			} else {
				missed++
			}
		}
		return reached, missed
	}
	country := append(l.Responsive(prober.KindTCP), l.Responsive(prober.KindDNS)...)

	t.Run("cut border", func(t *testing.T) {
		must(t, l.Cut(ctx, "border"))
		wantNone(t, l, "vp1", "responsive hosts", icmpHosts)
		wantAll(t, l, "vp1", "control targets", control)
		if reached, _ := services("vp1", country); reached != 0 {
			t.Errorf("%d of the country's TCP and DNS services reached through a cut border", reached)
		}
		if _, missed := services("vp1", l.ControlTargets()); missed != 0 {
			t.Errorf("%d control services (TCP, DNS) missed while only the border is cut", missed)
		}
		st, err := l.Status(ctx)
		must(t, err)
		if f := st.Faults(); !slices.Contains(f, "cut border") {
			t.Errorf("status faults = %v, want cut border", f)
		}
		must(t, l.Restore(ctx, "border"))
		wantAll(t, l, "vp1", "responsive hosts after restore", icmpHosts)
	})

	t.Run("cut vantage", func(t *testing.T) {
		must(t, l.Cut(ctx, "vp1"))
		wantNone(t, l, "vp1", "responsive hosts", icmpHosts)
		wantNone(t, l, "vp1", "control targets", control)
		wantAll(t, l, "vp2", "responsive hosts", icmpHosts)
		wantAll(t, l, "vp2", "control targets", control)
		if reached, _ := services("vp1", append(country, l.ControlTargets()...)); reached != 0 {
			t.Errorf("vp1 without uplink reached %d TCP and DNS services", reached)
		}
		if _, missed := services("vp2", append(country, l.ControlTargets()...)); missed != 0 {
			t.Errorf("vp2 missed %d TCP and DNS services while only vp1's uplink is cut", missed)
		}
		must(t, l.Restore(ctx, "vp1"))
		wantAll(t, l, "vp1", "responsive hosts after restore", icmpHosts)
		wantAll(t, l, "vp1", "control targets after restore", control)
	})

	t.Run("cut network", func(t *testing.T) {
		must(t, l.Cut(ctx, "198.19.1.0/24")) // a network by its prefix
		wantNone(t, l, "vp1", "net1", netAddrs(l, "net1"))
		wantAll(t, l, "vp1", "net0", netAddrs(l, "net0"))
		wantAll(t, l, "vp1", "net2", netAddrs(l, "net2"))
		must(t, l.Restore(ctx, "net1"))
		wantAll(t, l, "vp1", "net1 after restore", netAddrs(l, "net1"))
	})

	t.Run("loss", func(t *testing.T) {
		const percent, count = 30, 20
		hosts := netAddrs(l, "net0")
		must(t, l.Loss(ctx, "net0", percent))
		st, err := l.Status(ctx)
		must(t, err)
		if f := st.Faults(); !slices.Contains(f, "loss net0 30%") {
			t.Errorf("status faults = %v, want loss net0 30%%", f)
		}
		got, err := labtest.Ping(ctx, l, "vp1", "ip4:icmp", hosts, count, time.Second)
		must(t, err)
		n := 0
		for _, c := range got {
			n += c
		}
		sent := len(hosts) * count
		lost := 1 - float64(n)/float64(sent)
		// 600 probes: the binomial standard deviation is under 2 points,
		// so ±8 points never fails by chance.
		if lost < 0.22 || lost > 0.38 {
			t.Errorf("with %d%% loss, %d of %d probes went unanswered (%.0f%%)", percent, sent-n, sent, 100*lost)
		}
		// Other networks lose nothing.
		wantAll(t, l, "vp1", "net1", netAddrs(l, "net1"))
		must(t, l.Restore(ctx, "net0"))
		got, err = labtest.Ping(ctx, l, "vp1", "ip4:icmp", hosts, count, time.Second)
		must(t, err)
		n = 0
		for _, c := range got {
			n += c
		}
		if n != sent {
			t.Errorf("after restore, %d of %d probes answered", n, sent)
		}
	})

	t.Run("delay", func(t *testing.T) {
		err := l.Delay(ctx, "net0", 50*time.Millisecond)
		if l.NetemAvailable() {
			must(t, err)
			must(t, l.Restore(ctx, "net0"))
			return
		}
		if !errors.Is(err, lab.ErrNoNetem) {
			t.Errorf("delay without netem = %v, want ErrNoNetem", err)
		}
	})

	t.Run("decay", func(t *testing.T) {
		hosts := netAddrs(l, "net2")
		var mu sync.Mutex
		var steps []int
		done := make(chan error, 1)
		go func() {
			done <- l.Decay(ctx, "net2", time.Second, func(left int) {
				mu.Lock()
				steps = append(steps, left)
				mu.Unlock()
			})
		}()
		must(t, <-done)
		want := make([]int, len(hosts))
		for i := range want {
			want[i] = len(hosts) - 1 - i
		}
		if !slices.Equal(steps, want) {
			t.Errorf("decay steps = %v, want one host at a time down to 0", steps)
		}
		wantNone(t, l, "vp1", "decayed net2", hosts)
		wantAll(t, l, "vp1", "net1", netAddrs(l, "net1"))
		st, err := l.Status(ctx)
		must(t, err)
		if st.Networks[2].Answering != 0 {
			t.Errorf("status: net2 has %d answering, want 0", st.Networks[2].Answering)
		}
		must(t, l.Restore(ctx, "net2"))
		wantAll(t, l, "vp1", "net2 after restore", hosts)
		// TCP listeners survive the address coming and going.
		for _, tg := range l.Responsive(prober.KindTCP) {
			if slices.Contains(hosts, tg.Addr) {
				if err := labtest.Dial(ctx, l, "vp1", netip.AddrPortFrom(tg.Addr, tg.Port), time.Second); err != nil {
					t.Errorf("connect %s after decay and restore: %v", tg, err)
				}
			}
		}
	})

	t.Run("restore stops a decay", func(t *testing.T) {
		done := make(chan error, 1)
		go func() { done <- l.Decay(ctx, "net0", time.Hour, nil) }()
		time.Sleep(50 * time.Millisecond)
		must(t, l.Restore(ctx, "all"))
		select {
		case err := <-done:
			must(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("decay still running after restore")
		}
	})

	t.Run("up again repairs", func(t *testing.T) {
		must(t, l.Cut(ctx, "border"))
		must(t, l.Loss(ctx, "vp2", 50))
		l2, err := lab.Up(ctx, l.Config())
		must(t, err)
		l2.Close()
		st, err := l.Status(ctx)
		must(t, err)
		if f := st.Faults(); len(f) != 0 {
			t.Errorf("faults after up = %v, want none", f)
		}
		wantAll(t, l, "vp1", "responsive hosts", icmpHosts)
		wantAll(t, l, "vp2", "responsive hosts", icmpHosts)
	})
}

// checkIsolated checks that the root namespace has no route into the lab's
// range and that every veth in the lab has its peer in a lab namespace.
func checkIsolated(t *testing.T, l *lab.Lab) {
	t.Helper()
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	must(t, err)
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		p, ok := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		if ones == 0 {
			continue // the machine's default route is not a route into the lab
		}
		if ok && netip.PrefixFrom(p.Unmap(), ones).Overlaps(prober.Lab) {
			t.Errorf("root namespace has a route into the lab: %v", r)
		}
	}
	// The fault targets are the vantages, "border" and the networks.
	roles := append([]string{"transit", "country"}, l.Targets()...)
	handles := map[string]netns.NsHandle{}
	for _, r := range roles {
		h, err := netns.GetFromName(l.Namespace(r))
		must(t, err)
		defer h.Close()
		handles[r] = h
	}
	root, err := netns.Get()
	must(t, err)
	defer root.Close()
	veths := 0
	for r, h := range handles {
		nh, err := netlink.NewHandleAt(h)
		must(t, err)
		defer nh.Close()
		// The ids this namespace knows its peers' namespaces by.
		ids := map[int]bool{}
		for o, oh := range handles {
			if o == r {
				continue
			}
			if id, err := nh.GetNetNsIdByFd(int(oh)); err == nil && id >= 0 {
				ids[id] = true
			}
		}
		if id, err := nh.GetNetNsIdByFd(int(root)); err == nil && id >= 0 && ids[id] {
			t.Fatalf("namespace id %d is both root and a lab namespace", id)
		}
		links, err := nh.LinkList()
		must(t, err)
		for _, lk := range links {
			if lk.Type() != "veth" {
				continue
			}
			veths++
			if !ids[lk.Attrs().NetNsID] {
				t.Errorf("%s: veth %s has its peer outside the lab (netnsid %d)", l.Namespace(r), lk.Attrs().Name, lk.Attrs().NetNsID)
			}
		}
	}
	if want := 2 * (len(l.Targets()) + 1); veths != want {
		t.Errorf("found %d veth ends in the lab, want %d", veths, want)
	}
	// And no lab interface name appears in the root namespace.
	links, err := netlink.LinkList()
	must(t, err)
	for _, lk := range links {
		if lk.Type() == "veth" && (lk.Attrs().Name == "up" || slices.Contains(roles, lk.Attrs().Name)) {
			t.Errorf("root namespace has a lab-looking veth %s", lk.Attrs().Name)
		}
	}
}

// TestDownAfterCrash brings a lab up, forgets it (as a crashed process
// would, state directory and all) and checks that Down still removes every
// namespace, and only the lab's own: a lab whose prefix extends this one's
// survives.
func TestDownAfterCrash(t *testing.T) {
	labtest.Require(t)
	ctx := context.Background()
	cfg := lab.Default()
	cfg.Prefix = labtest.Prefix()
	cfg.StateDir = t.TempDir()
	other := cfg
	other.Prefix = cfg.Prefix + "-x"
	t.Cleanup(func() { lab.Down(ctx, cfg); lab.Down(ctx, other) })

	l, err := lab.Up(ctx, cfg)
	must(t, err)
	l.Close()
	o, err := lab.Up(ctx, other)
	must(t, err)
	o.Close()
	// The crash: no Close, no Down, and the state is lost too.
	must(t, os.RemoveAll(filepath.Join(cfg.StateDir, cfg.Prefix)))

	if _, err := lab.Attach(cfg.StateDir, cfg.Prefix); !errors.Is(err, lab.ErrNotUp) {
		t.Errorf("attach without state = %v, want ErrNotUp", err)
	}
	must(t, lab.Down(ctx, cfg))
	for _, e := range listNamespaces(t) {
		if strings.HasPrefix(e, cfg.Prefix+"-") && !strings.HasPrefix(e, other.Prefix+"-") {
			t.Errorf("namespace %s survived down", e)
		}
	}
	n := 0
	for _, e := range listNamespaces(t) {
		if strings.HasPrefix(e, other.Prefix+"-") {
			n++
		}
	}
	if n != 9 {
		t.Errorf("the other lab has %d namespaces left, want all 9", n)
	}
	// Down twice is harmless.
	must(t, lab.Down(ctx, cfg))
	must(t, lab.Down(ctx, other))
	for _, e := range listNamespaces(t) {
		if strings.HasPrefix(e, cfg.Prefix+"-") {
			t.Errorf("namespace %s survived down", e)
		}
	}
}

func listNamespaces(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// BenchmarkUpDown measures what a lab costs a test: Up of the default lab
// (9 namespaces, 8 links, routes, sysctls), then Down.
func BenchmarkUpDown(b *testing.B) {
	labtest.Require(b)
	ctx := context.Background()
	cfg := lab.Default()
	cfg.Prefix = labtest.Prefix()
	cfg.StateDir = b.TempDir()
	b.Cleanup(func() { lab.Down(ctx, cfg) })
	for b.Loop() {
		l, err := lab.Up(ctx, cfg)
		if err != nil {
			b.Fatal(err)
		}
		l.Close()
		if err := lab.Down(ctx, cfg); err != nil {
			b.Fatal(err)
		}
	}
}
