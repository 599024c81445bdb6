package prober

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// testNet is a three-namespace network built by the test itself, until
// the lab (prober/lab) can be used: vantage — router — country, linked by
// veth pairs that never touch the root namespace, with addresses in
// 198.18.0.0/15 only.
//
//	vantage 198.18.250.1/30 — .2 router .5/30 — .6 country
//
// The country answers ICMP echo for all of 198.19.128.0/17 (AnyIP) and
// listens where tests put listeners; the router blackholes 198.19.1.0/24
// (silent) and answers host-unreachable for 198.19.2.0/24 and
// administratively-prohibited for 198.19.3.0/24.
type testNet struct {
	prefix  string
	Vantage string // namespace names
	Router  string
	Country string
}

var (
	netVantage    = netip.MustParseAddr("198.18.250.1")
	netRouter     = netip.MustParseAddr("198.18.250.2")
	netResponsive = netip.MustParsePrefix("198.19.128.0/17")
	netSilent     = netip.MustParseAddr("198.19.1.5")
	netUnreach    = netip.MustParseAddr("198.19.2.5")
	netProhibit   = netip.MustParseAddr("198.19.3.5")
	netLocalFail  = netip.MustParseAddr("198.19.4.5") // the vantage's own route says unreachable
	labOnly       = labPolicy()
)

// labPolicy allows the lab and nothing else: every address outside
// 198.18.0.0/15 is opted out.
func labPolicy() Policy {
	return Policy{
		Allow: []netip.Prefix{Lab},
		OptOut: mustPrefixes("0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/6", "196.0.0.0/7",
			"198.0.0.0/12", "198.16.0.0/15", "198.20.0.0/14", "198.24.0.0/13", "198.32.0.0/11",
			"198.64.0.0/10", "198.128.0.0/9", "199.0.0.0/8", "200.0.0.0/5", "208.0.0.0/4",
			"224.0.0.0/3", "::/0"),
	}
}

// newTestNet builds the network or skips the test when not root (and
// fails when CUTOFF_REQUIRE_LAB=1).
func newTestNet(t testing.TB) *testNet {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CUTOFF_REQUIRE_LAB") == "1" {
			t.Fatal("lab test needs root (CUTOFF_REQUIRE_LAB=1)")
		}
		t.Skip("lab test needs root: skipped")
	}
	p := fmt.Sprintf("cteng%d", os.Getpid()%100000)
	n := &testNet{prefix: p, Vantage: p + "-vp", Router: p + "-rt", Country: p + "-cc"}
	t.Cleanup(n.down)
	steps := [][]string{
		{"netns", "add", n.Vantage},
		{"netns", "add", n.Router},
		{"netns", "add", n.Country},
		{"-n", n.Vantage, "link", "add", "v0", "type", "veth", "peer", "name", "r0", "netns", n.Router},
		{"-n", n.Router, "link", "add", "r1", "type", "veth", "peer", "name", "c0", "netns", n.Country},
		{"-n", n.Vantage, "addr", "add", "198.18.250.1/30", "dev", "v0"},
		{"-n", n.Router, "addr", "add", "198.18.250.2/30", "dev", "r0"},
		{"-n", n.Router, "addr", "add", "198.18.250.5/30", "dev", "r1"},
		{"-n", n.Country, "addr", "add", "198.18.250.6/30", "dev", "c0"},
		{"-n", n.Vantage, "link", "set", "lo", "up"},
		{"-n", n.Router, "link", "set", "lo", "up"},
		{"-n", n.Country, "link", "set", "lo", "up"},
		{"-n", n.Vantage, "link", "set", "v0", "up"},
		{"-n", n.Router, "link", "set", "r0", "up"},
		{"-n", n.Router, "link", "set", "r1", "up"},
		{"-n", n.Country, "link", "set", "c0", "up"},
		{"-n", n.Vantage, "route", "add", "198.18.0.0/15", "via", "198.18.250.2"},
		{"-n", n.Router, "route", "add", "198.19.0.0/16", "via", "198.18.250.6"},
		{"-n", n.Vantage, "route", "add", "unreachable", "198.19.4.0/24"},
		{"-n", n.Router, "route", "add", "blackhole", "198.19.1.0/24"},
		{"-n", n.Router, "route", "add", "unreachable", "198.19.2.0/24"},
		{"-n", n.Router, "route", "add", "prohibit", "198.19.3.0/24"},
		{"-n", n.Country, "route", "add", "198.18.0.0/16", "via", "198.18.250.5"},
		{"-n", n.Country, "route", "add", "local", "198.19.128.0/17", "dev", "lo"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(s, " "), err, out)
		}
	}
	// Errors for unreachable/prohibit routes are also limited by
	// net.ipv4.route.error_cost/error_burst (1/s, burst 5 per source),
	// which exist only in the root namespace and are left alone: tests
	// expect at most 5 such errors per network.
	sysctls := map[string][]string{
		n.Router:  {"net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=1000000", "net.ipv4.icmp_msgs_burst=1000000"},
		n.Country: {"net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=1000000", "net.ipv4.icmp_msgs_burst=1000000"},
		n.Vantage: {"net.ipv4.ping_group_range=0 2147483647"},
	}
	for ns, kvs := range sysctls {
		for _, kv := range kvs {
			k, v, _ := strings.Cut(kv, "=")
			if err := n.Do(ns, func() error { return writeSysctl(k, v) }); err != nil {
				t.Fatalf("sysctl %s in %s: %v", kv, ns, err)
			}
		}
	}
	return n
}

func writeSysctl(k, v string) error {
	return os.WriteFile("/proc/sys/"+strings.ReplaceAll(k, ".", "/"), []byte(v), 0o644)
}

func (n *testNet) down() {
	for _, ns := range []string{n.Vantage, n.Router, n.Country} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}

// Do runs fn on a locked OS thread inside namespace ns. Sockets opened
// by fn stay in ns.
func (n *testNet) Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked if we cannot switch back: the thread dies with the goroutine
		self, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(self)
		target, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns back: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// readSNMP returns a counter of /proc/net/snmp ("Icmp", "OutEchoReps")
// as seen inside ns (through thread-self: /proc/self/net follows the
// main thread's namespace, not ours).
func (n *testNet) readSNMP(t testing.TB, ns, group, field string) uint64 {
	t.Helper()
	var v uint64
	err := n.Do(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(names) == 0 || names[0] != group+":" || len(vals) != len(names) {
				continue
			}
			for j, name := range names {
				if name == field {
					_, err := fmt.Sscan(vals[j], &v)
					return err
				}
			}
		}
		return fmt.Errorf("no %s %s in /proc/net/snmp", group, field)
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
