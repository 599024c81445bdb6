package prober

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrRefused is returned for a target the policy forbids.
var ErrRefused = errors.New("target refused by policy")

// Reserved is the special-purpose address space (IANA's IPv4 and IPv6
// special-purpose registries, plus multicast) that no probe may reach
// unless a Policy allows it explicitly: private networks, loopback,
// link-local, documentation and benchmarking ranges, multicast and the
// rest. The lab lives in 198.18.0.0/15 and allows exactly that.
var Reserved = mustPrefixes(
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24",
	"192.88.99.0/24", "192.168.0.0/16", "192.175.48.0/24", "198.18.0.0/15",
	"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"::/128", "::1/128", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
	"2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "ff00::/8",
)

// Lab is the only reserved space cutoff's own tests, demo and benchmarks
// ever allow.
var Lab = netip.MustParsePrefix("198.18.0.0/15")

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// Policy decides which addresses may be probed. The zero Policy refuses
// reserved space and allows the rest of the internet.
type Policy struct {
	// Allow names reserved prefixes that may be probed anyway.
	Allow []netip.Prefix
	// OptOut names prefixes never to probe, whatever Allow says: networks
	// whose operators asked not to be measured.
	OptOut []netip.Prefix
}

// Check returns nil if a may be probed, else an error wrapping ErrRefused
// that says why.
func (p *Policy) Check(a netip.Addr) error {
	if !a.IsValid() {
		return fmt.Errorf("%w: no address", ErrRefused)
	}
	a = a.Unmap()
	for _, o := range p.OptOut {
		if o.Contains(a) {
			return fmt.Errorf("%w: %s is in opted-out %s", ErrRefused, a, o)
		}
	}
	for _, r := range Reserved {
		if !r.Contains(a) {
			continue
		}
		for _, al := range p.Allow {
			if al.Contains(a) {
				return nil
			}
		}
		return fmt.Errorf("%w: %s is in reserved %s (allow it with --allow-reserved)", ErrRefused, a, r)
	}
	return nil
}
