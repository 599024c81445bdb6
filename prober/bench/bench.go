// Package bench measures the prober side of cutoff against its targets
// and its peers (`cutoff bench`): the ICMP engine side by side with zmap
// and fping over the same lab range, the agent's path for results into
// PostgreSQL, and the scheduler's memory and CPU per tracked block.
//
// Every benchmark is bounded in count and time. Figures leave as report
// values (with a Write method that prints them as a table); progress goes
// to a logger. Nothing here sends a packet outside the lab: the ICMP
// benchmark runs in a lab of its own (network namespaces with no route out
// of 198.18.0.0/15), checks that before every run, and gives every tool a
// target list naming only the lab's AnyIP range. The correlator's
// benchmark lives in store/bench: the prober side never imports it.
package bench

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// addrs calls yield for every address of p, in order; without the first
// and last (network and broadcast, which fping -g skips too) when
// skipEnds.
func addrs(p netip.Prefix, skipEnds bool, yield func(netip.Addr) bool) {
	p = p.Masked()
	a, last := p.Addr(), lastAddr(p)
	if skipEnds {
		a, last = a.Next(), last.Prev()
	}
	for ; a.IsValid() && a.Compare(last) <= 0; a = a.Next() {
		if !yield(a) {
			return
		}
	}
}

// count is the number of addresses addrs visits.
func count(p netip.Prefix, skipEnds bool) int {
	n := 1 << (32 - p.Bits())
	if skipEnds && n > 2 {
		n -= 2
	}
	return n
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// complement returns the IPv4 prefixes that, with p, cover the whole IPv4
// space without overlapping: the sibling of p at every prefix length.
func complement(p netip.Prefix) []netip.Prefix {
	p = p.Masked()
	out := make([]netip.Prefix, 0, p.Bits())
	for bits := 1; bits <= p.Bits(); bits++ {
		q, _ := p.Addr().Prefix(bits)
		b := q.Addr().As4()
		i := bits - 1 // flip the last bit of the prefix
		b[i/8] ^= 0x80 >> (i % 8)
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(b), bits))
	}
	return out
}

// readProcNet reads a /proc/net file of the calling thread's network
// namespace (call it inside lab.Do).
func readProcNet(name string) (string, error) {
	b, err := os.ReadFile("/proc/thread-self/net/" + name)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// snmpField picks group's field (e.g. Icmp OutEchoReps) out of
// /proc/net/snmp's pairs of header and value lines.
func snmpField(snmp, group, field string) (uint64, error) {
	lines := strings.Split(snmp, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != group+":" || len(vals) != len(names) {
			continue
		}
		for j, n := range names {
			if n == field {
				var v uint64
				_, err := fmt.Sscan(vals[j], &v)
				return v, err
			}
		}
	}
	return 0, fmt.Errorf("no %s %s in /proc/net/snmp", group, field)
}

// devTxPackets picks an interface's transmitted packets out of
// /proc/net/dev.
func devTxPackets(dev, iface string) (uint64, error) {
	for _, line := range strings.Split(dev, "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != iface {
			continue
		}
		f := strings.Fields(rest)
		// rx: bytes packets errs drop fifo frame compressed multicast;
		// tx: bytes packets ...
		if len(f) < 10 {
			return 0, fmt.Errorf("/proc/net/dev: short line for %s", iface)
		}
		var v uint64
		_, err := fmt.Sscan(f[9], &v)
		return v, err
	}
	return 0, fmt.Errorf("/proc/net/dev: no interface %s", iface)
}
