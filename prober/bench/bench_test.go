//go:build linux

package bench

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

func TestComplement(t *testing.T) {
	tests := []struct {
		name string
		give string
	}{
		{"lab", "198.18.0.0/15"},
		{"anyip", "198.19.0.0/16"},
		{"host", "198.19.128.7/32"},
		{"half", "128.0.0.0/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := netip.MustParsePrefix(tt.give)
			c := complement(p)
			if len(c) != p.Bits() {
				t.Fatalf("%d prefixes, want %d", len(c), p.Bits())
			}
			// Together they hold 2^32 addresses and none overlap.
			var total uint64 = 1 << (32 - p.Bits())
			for i, q := range c {
				if q.Overlaps(p) {
					t.Errorf("%s overlaps %s", q, p)
				}
				for _, r := range c[:i] {
					if q.Overlaps(r) {
						t.Errorf("%s overlaps %s", q, r)
					}
				}
				total += 1 << (32 - q.Bits())
			}
			if total != 1<<32 {
				t.Errorf("cover %d addresses, want 2^32", total)
			}
		})
	}
}

// Every address is either in p or in exactly one prefix of its
// complement: what keeps the sweep worker's policy to the range.
func TestComplementPartitions(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	p := netip.MustParsePrefix("198.19.0.0/16")
	c := complement(p)
	for range 10000 {
		v := rng.Uint32()
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		n := 0
		for _, q := range c {
			if q.Contains(a) {
				n++
			}
		}
		if p.Contains(a) {
			n++
		}
		if n != 1 {
			t.Fatalf("%s is in %d of the range and its complement, want 1", a, n)
		}
	}
}

func TestCover(t *testing.T) {
	tests := []struct {
		name        string
		first, last string
		want        string
	}{
		{"one", "198.19.0.1", "198.19.0.1", "[198.19.0.1/32]"},
		{"aligned", "198.19.0.0", "198.19.0.255", "[198.19.0.0/24]"},
		{"without ends", "198.19.0.1", "198.19.0.6", "[198.19.0.1/32 198.19.0.2/31 198.19.0.4/31 198.19.0.6/32]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fmt.Sprint(cover(netip.MustParseAddr(tt.first), netip.MustParseAddr(tt.last)))
			if got != tt.want {
				t.Errorf("cover = %s, want %s", got, tt.want)
			}
		})
	}
}

// zmap's allowlist and fping's list name the same addresses.
func TestCoverMatchesAddrs(t *testing.T) {
	for _, s := range []string{"198.19.0.0/16", "198.19.128.0/22", "198.19.4.0/30"} {
		p := netip.MustParsePrefix(s)
		var want []netip.Addr
		addrs(p, true, func(a netip.Addr) bool { want = append(want, a); return true })
		if len(want) != count(p, true) {
			t.Errorf("%s: addrs gives %d, count says %d", p, len(want), count(p, true))
		}
		var got []netip.Addr
		for _, q := range cover(p.Addr().Next(), lastAddr(p).Prev()) {
			if !p.Contains(q.Addr()) || q.Bits() < p.Bits() {
				t.Fatalf("%s: allowlist entry %s outside the range", p, q)
			}
			addrs(q, false, func(a netip.Addr) bool { got = append(got, a); return true })
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: allowlist covers %d addresses, the list has %d", p, len(got), len(want))
		}
	}
}

func TestProcParsers(t *testing.T) {
	snmp := "Ip: Forwarding DefaultTTL\nIp: 1 64\nIcmp: InMsgs OutEchoReps InEchos\nIcmp: 5 4242 7\n"
	dev := "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n" +
		"    lo: 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n    up: 100 2 0 0 0 0 0 0 9000 65534 0 0 0 0 0 0\n"
	tests := []struct {
		name    string
		give    func() (uint64, error)
		want    uint64
		wantErr bool
	}{
		{"echo replies", func() (uint64, error) { return snmpField(snmp, "Icmp", "OutEchoReps") }, 4242, false},
		{"no field", func() (uint64, error) { return snmpField(snmp, "Icmp", "OutEchos") }, 0, true},
		{"no group", func() (uint64, error) { return snmpField(snmp, "Tcp", "InSegs") }, 0, true},
		{"tx packets", func() (uint64, error) { return devTxPackets(dev, "up") }, 65534, false},
		{"no interface", func() (uint64, error) { return devTxPackets(dev, "eth0") }, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.give()
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestSendSpan(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// steady: 10 packets per ms from 5 ms to 105 ms (1000 packets), sampled
	// every 10 ms: the ends fall between samples.
	var steady []sample
	for ms := 0; ms <= 130; ms += 10 {
		n := min(max(ms-5, 0), 100) * 10
		steady = append(steady, sample{at(ms), uint64(500 + n)})
	}
	tests := []struct {
		name     string
		give     []sample
		wantSent uint64
		wantTime time.Duration
	}{
		{"nothing", []sample{{at(0), 5}, {at(10), 5}}, 0, 0},
		{"one sample", []sample{{at(0), 5}}, 0, 0},
		{"steady", steady, 1000, 100 * time.Millisecond},
		{"short", []sample{{at(0), 5}, {at(10), 5}, {at(20), 105}, {at(30), 205}, {at(40), 305}, {at(50), 305}}, 300, 20 * time.Millisecond},
		{"within one interval", []sample{{at(0), 0}, {at(10), 50}, {at(20), 50}}, 50, sampleEvery},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent, d := sendSpan(tt.give)
			if sent != tt.wantSent || (d-tt.wantTime).Abs() > time.Microsecond {
				t.Errorf("sendSpan = %d, %s; want %d, %s", sent, d, tt.wantSent, tt.wantTime)
			}
		})
	}
}

func TestRateName(t *testing.T) {
	tests := []struct {
		give int
		want string
	}{{0, "max"}, {10_000, "10k"}, {100_000, "100k"}, {1500, "1500"}}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := rateName(tt.give); got != tt.want {
				t.Errorf("rateName(%d) = %s, want %s", tt.give, got, tt.want)
			}
		})
	}
}
