package prober

import (
	"errors"
	"net/netip"
	"testing"
)

func TestPolicyCheck(t *testing.T) {
	lab := Policy{Allow: []netip.Prefix{Lab}}
	optOut := Policy{OptOut: []netip.Prefix{netip.MustParsePrefix("175.45.178.0/24")}}
	tests := []struct {
		name   string
		policy Policy
		give   string
		ok     bool
	}{
		{"public address", Policy{}, "175.45.176.1", true},
		{"private 10/8", Policy{}, "10.1.2.3", false},
		{"private 192.168", Policy{}, "192.168.1.1", false},
		{"loopback", Policy{}, "127.0.0.1", false},
		{"multicast", Policy{}, "224.0.0.1", false},
		{"benchmarking space refused by default", Policy{}, "198.19.0.1", false},
		{"lab allowed", lab, "198.19.0.1", true},
		{"lab allows only the lab", lab, "10.0.0.1", false},
		{"ipv4-mapped loopback", Policy{}, "::ffff:127.0.0.1", false},
		{"ipv6 loopback", Policy{}, "::1", false},
		{"ipv6 link-local", Policy{}, "fe80::1", false},
		{"ipv6 documentation", Policy{}, "2001:db8::1", false},
		{"ipv6 public", Policy{}, "2400:cb00::1", true},
		{"opted out", optOut, "175.45.178.9", false},
		{"not opted out", optOut, "175.45.179.9", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Check(netip.MustParseAddr(tt.give))
			if tt.ok && err != nil {
				t.Fatalf("Check(%s) = %v, want allowed", tt.give, err)
			}
			if !tt.ok && !errors.Is(err, ErrRefused) {
				t.Fatalf("Check(%s) = %v, want ErrRefused", tt.give, err)
			}
		})
	}
	if err := (&Policy{}).Check(netip.Addr{}); !errors.Is(err, ErrRefused) {
		t.Fatalf("zero address allowed: %v", err)
	}
}
