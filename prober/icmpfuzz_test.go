package prober

import (
	"net/netip"
	"testing"
	"time"
)

// fuzzProbes are the probes in flight when a fuzzed message arrives: the
// same key and send times as the seeds in testdata/fuzz/FuzzHandleICMP.
var fuzzProbes = [][4]byte{{198, 19, 0, 7}, {198, 19, 0, 8}, {198, 19, 0, 7}}

// FuzzHandleICMP feeds arbitrary bytes to the receive path, both as a raw
// socket delivers them (IPv4 header first) and as a ping socket does (the
// ICMP message alone), and checks its invariants: no panic; a message
// completes a probe only if it carries that probe's destination and, when
// it has a payload, its signed counter; no probe completes twice, however
// often the message is repeated.
func FuzzHandleICMP(f *testing.F) {
	f.Add([]byte{})
	f.Add(ipv4Packet(fuzzProbes[0], vantage, 1, reply(request(fuzzProbes[0], 1, 0))))
	f.Add(reply(request(fuzzProbes[1], 2, 0)))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, raw := range []bool{true, false} {
			m := newMatcher(testKey, testID, raw, time.Hour, testEpoch)
			completions := make([]int, len(fuzzProbes))
			m.mu.Lock()
			for i, a := range fuzzProbes {
				m.register(a, 0, func(r Result) {
					completions[i]++
					if r.Target.Addr != netip.AddrFrom4(fuzzProbes[i]) {
						t.Errorf("probe %d completed for %s", i, r.Target.Addr)
					}
				})
			}
			m.mu.Unlock()
			for range 3 {
				var p packet
				v := vMalformed
				if raw {
					if from, b, ok := parseIPv4(data); ok {
						v = parseICMP(from, b, &p)
					}
				} else {
					v = parseICMP(fuzzProbes[0], data, &p)
				}
				m.mu.Lock()
				cs, got := m.handle(&p, v, int64(time.Millisecond), nil)
				m.mu.Unlock()
				if (got == vMatched || got == vMatchedError) != (len(cs) == 1) || len(cs) > 1 {
					t.Fatalf("verdict %d with %d completions", got, len(cs))
				}
				if len(cs) == 1 && p.hasPayload {
					c := p.counter
					if c < 1 || c > uint64(len(fuzzProbes)) || fuzzProbes[c-1] != p.dst ||
						p.cookie != testKey.cookie(p.dst, p.id, p.seq, c, p.sent) {
						t.Fatalf("matched an unsigned or misdirected message: %+v", p)
					}
				}
				complete(cs)
			}
			for i, n := range completions {
				if n > 1 {
					t.Fatalf("probe %d completed %d times", i, n)
				}
			}
		}
	})
}
