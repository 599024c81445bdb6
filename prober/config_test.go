package prober

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// TestAdmitSharesOneLimiter checks the front every engine's Probe goes
// through: the policy first (a refused target takes no token), then the
// shared limiter, whose wait ends with the caller's context.
func TestAdmitSharesOneLimiter(t *testing.T) {
	lim := NewLimiter(1) // one token, then one a second
	policy := Policy{Allow: []netip.Prefix{Lab}}
	icmp := Config{Policy: policy, Limiter: lim}.withDefaults()
	tcp := Config{Policy: policy, Limiter: lim}.withDefaults()
	ctx := context.Background()
	lab := Target{Kind: KindICMP, Addr: netip.MustParseAddr("198.19.0.1")}

	if err := icmp.admit(ctx, Target{Kind: KindICMP, Addr: netip.MustParseAddr("10.0.0.1")}); !errors.Is(err, ErrRefused) {
		t.Fatalf("reserved target admitted: %v", err)
	}
	if err := icmp.admit(ctx, lab); err != nil {
		t.Fatalf("first probe: %v (a refused target must not have used the token)", err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := tcp.admit(short, Target{Kind: KindTCP, Addr: lab.Addr, Port: 80}); err == nil {
		t.Fatal("second engine got a token the shared limiter had already given out")
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.Timeout != DefaultTimeout || c.Limiter == nil || c.Now == nil || c.Log == nil {
		t.Fatalf("defaults not filled: %+v", c)
	}
	if err := c.Policy.Check(netip.MustParseAddr("127.0.0.1")); !errors.Is(err, ErrRefused) {
		t.Errorf("zero policy allows loopback")
	}
}
