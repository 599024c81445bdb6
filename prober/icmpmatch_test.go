package prober

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

var (
	testKey   = newSipKey([16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	testEpoch = time.Date(2014, 12, 22, 16, 0, 0, 0, time.UTC)
	testText  = []byte("cutoff reachability measurement; opt out: https://example.org/opt-out")
	testID    = uint16(0x4242)
	vantage   = [4]byte{198, 18, 1, 2}
	router    = [4]byte{198, 18, 0, 1}
)

// request builds the echo request the engine sends for counter c.
func request(dst [4]byte, c uint64, sent int64) []byte {
	b := make([]byte, echoTextOff+len(testText))
	copy(b[echoTextOff:], testText)
	putEcho(b, testKey, dst, testID, c, sent)
	return b
}

// reply turns an echo request into the echo reply a host would send.
func reply(req []byte) []byte {
	b := bytes.Clone(req)
	b[0] = icmpEchoReply
	binary.BigEndian.PutUint16(b[2:4], 0)
	binary.BigEndian.PutUint16(b[2:4], checksum(b))
	return b
}

// ipv4Packet wraps an ICMP message in the IPv4 header a raw socket
// delivers.
func ipv4Packet(src, dst [4]byte, proto byte, payload []byte) []byte {
	h := make([]byte, 20, 20+len(payload))
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:4], uint16(20+len(payload)))
	h[8] = 64
	h[9] = proto
	copy(h[12:16], src[:])
	copy(h[16:20], dst[:])
	return append(h, payload...)
}

// icmpError builds a destination-unreachable (or other error type) from
// router quoting quoted (an IPv4 packet), truncated to keep bytes of it.
func icmpErrorMsg(typ, code byte, quoted []byte, keep int) []byte {
	q := quoted[:min(keep, len(quoted))]
	b := append([]byte{typ, code, 0, 0, 0, 0, 0, 0}, q...)
	binary.BigEndian.PutUint16(b[2:4], checksum(b))
	return b
}

func fixChecksum(b []byte) []byte {
	binary.BigEndian.PutUint16(b[2:4], 0)
	binary.BigEndian.PutUint16(b[2:4], checksum(b))
	return b
}

func TestPutEchoMatchesXNetICMP(t *testing.T) {
	dst := [4]byte{198, 19, 0, 7}
	got := request(dst, 0x1_0005, 12345)
	m, err := icmp.ParseMessage(1, got)
	if err != nil {
		t.Fatalf("x/net/icmp cannot parse our request: %v", err)
	}
	echo, ok := m.Body.(*icmp.Echo)
	if m.Type != ipv4.ICMPTypeEcho || !ok {
		t.Fatalf("parsed as %v %T, want echo request", m.Type, m.Body)
	}
	if echo.ID != int(testID) || echo.Seq != 5 {
		t.Errorf("id %#x seq %d, want %#x 5", echo.ID, echo.Seq, testID)
	}
	want, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: echo.ID, Seq: echo.Seq, Data: echo.Data}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("request differs from x/net/icmp's marshalling:\n got %x\nwant %x", got, want)
	}
	if !bytes.HasSuffix(got, testText) {
		t.Errorf("payload does not end with the contact text")
	}
}

// matchCase drives a matcher with one probe in flight (and optional
// extra steps) and checks how a crafted message is judged.
func TestMatcherJudges(t *testing.T) {
	target := [4]byte{198, 19, 0, 7}
	other := [4]byte{198, 19, 0, 8}
	const sent = int64(time.Second)
	const timeout = 2 * time.Second
	now := sent + int64(30*time.Millisecond)

	tests := []struct {
		name    string
		give    func(req []byte) []byte // raw IPv4 packet as received
		at      int64                   // receive time; 0 means now
		before  int                     // deliver the valid reply this many times first
		checkID bool
		want    verdict
		wantRes Outcome
		from    [4]byte
	}{
		{
			name: "reply", want: vMatched, wantRes: Reply, from: target,
			give: func(req []byte) []byte { return ipv4Packet(target, vantage, 1, reply(req)) },
		},
		{
			name: "reply checked by id", checkID: true, want: vMatched, wantRes: Reply, from: target,
			give: func(req []byte) []byte { return ipv4Packet(target, vantage, 1, reply(req)) },
		},
		{
			name: "forged cookie", want: vForged,
			give: func(req []byte) []byte {
				r := reply(req)
				r[echoPayloadOff+16] ^= 1
				return ipv4Packet(target, vantage, 1, fixChecksum(r))
			},
		},
		{
			name: "forged send time", want: vForged,
			give: func(req []byte) []byte {
				r := reply(req)
				r[echoPayloadOff+15]++
				return ipv4Packet(target, vantage, 1, fixChecksum(r))
			},
		},
		{
			name: "sequence disagrees with counter", want: vForged,
			give: func(req []byte) []byte {
				r := reply(req)
				r[7]++
				return ipv4Packet(target, vantage, 1, fixChecksum(r))
			},
		},
		{
			name: "reply from another address", want: vForged,
			give: func(req []byte) []byte { return ipv4Packet(other, vantage, 1, reply(req)) },
		},
		{
			name: "reply without our payload", want: vForged,
			give: func(req []byte) []byte {
				return ipv4Packet(target, vantage, 1, fixChecksum(reply(req)[:icmpHeaderLen+4]))
			},
		},
		{
			name: "wrong id on a raw socket", checkID: true, want: vWrongID,
			give: func(req []byte) []byte {
				r := reply(req)
				r[4]++
				return ipv4Packet(target, vantage, 1, fixChecksum(r))
			},
		},
		{
			name: "wrong id on a ping socket fails the cookie", want: vForged,
			give: func(req []byte) []byte {
				r := reply(req)
				r[4]++
				return ipv4Packet(target, vantage, 1, fixChecksum(r))
			},
		},
		{
			name: "duplicate", before: 1, want: vDuplicate,
			give: func(req []byte) []byte { return ipv4Packet(target, vantage, 1, reply(req)) },
		},
		{
			name: "replayed twice", before: 2, want: vDuplicate,
			give: func(req []byte) []byte { return ipv4Packet(target, vantage, 1, reply(req)) },
		},
		{
			name: "late", at: sent + int64(timeout) + 1, want: vStale,
			give: func(req []byte) []byte { return ipv4Packet(target, vantage, 1, reply(req)) },
		},
		{
			name: "bad checksum", want: vMalformed,
			give: func(req []byte) []byte {
				r := reply(req)
				r[2]++
				return ipv4Packet(target, vantage, 1, r)
			},
		},
		{
			name: "truncated", want: vMalformed,
			give: func(req []byte) []byte { return ipv4Packet(target, vantage, 1, []byte{0, 0, 0xff}) },
		},
		{
			name: "not ipv4", want: vMalformed,
			give: func(req []byte) []byte {
				p := ipv4Packet(target, vantage, 1, reply(req))
				p[0] = 0x65
				return p
			},
		},
		{
			name: "our own echo request", want: vForeign,
			give: func(req []byte) []byte { return ipv4Packet(vantage, target, 1, req) },
		},
		{
			name: "unreachable quoting the whole probe", want: vMatchedError, wantRes: Unreachable, from: router,
			give: func(req []byte) []byte {
				return ipv4Packet(router, vantage, 1, icmpErrorMsg(3, 1, ipv4Packet(vantage, target, 1, req), 548))
			},
		},
		{
			name: "time exceeded quoting 8 bytes", want: vMatchedError, wantRes: Unreachable, from: router,
			give: func(req []byte) []byte {
				return ipv4Packet(router, vantage, 1, icmpErrorMsg(11, 0, ipv4Packet(vantage, target, 1, req), 28))
			},
		},
		{
			// RFC 4884: the quoted datagram padded to 128 bytes, its length
			// in the header, then an extension structure (RFC 5837's
			// interface information, as modern routers send).
			name: "unreachable with RFC 4884 extensions", want: vMatchedError, wantRes: Unreachable, from: router,
			give: func(req []byte) []byte {
				m := icmp.Message{Type: ipv4.ICMPTypeDestinationUnreachable, Code: 1, Body: &icmp.DstUnreach{
					Data: ipv4Packet(vantage, target, 1, req),
					Extensions: []icmp.Extension{&icmp.InterfaceInfo{Class: 2, Type: 0x0f,
						Interface: &net.Interface{Index: 15, Name: "en101", MTU: 1500}}},
				}}
				b, err := m.Marshal(nil)
				if err != nil {
					panic(err)
				}
				return ipv4Packet(router, vantage, 1, b)
			},
		},
		{
			name: "unreachable quoting 8 bytes of a probe to someone else", want: vStale,
			give: func(req []byte) []byte {
				return ipv4Packet(router, vantage, 1, icmpErrorMsg(3, 1, ipv4Packet(vantage, other, 1, req), 28))
			},
		},
		{
			name: "unreachable with a forged quoted cookie", want: vForged,
			give: func(req []byte) []byte {
				q := bytes.Clone(req)
				q[echoPayloadOff+20] ^= 0x80
				return ipv4Packet(router, vantage, 1, icmpErrorMsg(3, 1, ipv4Packet(vantage, target, 1, q), 548))
			},
		},
		{
			name: "unreachable quoting another id", checkID: true, want: vWrongID,
			give: func(req []byte) []byte {
				q := bytes.Clone(req)
				q[5]++
				return ipv4Packet(router, vantage, 1, icmpErrorMsg(3, 1, ipv4Packet(vantage, target, 1, q), 548))
			},
		},
		{
			name: "unreachable about udp", want: vForeign,
			give: func(req []byte) []byte {
				return ipv4Packet(router, vantage, 1, icmpErrorMsg(3, 3, ipv4Packet(vantage, target, 17, req), 548))
			},
		},
		{
			name: "unreachable quoting a short header", want: vMalformed,
			give: func(req []byte) []byte {
				return ipv4Packet(router, vantage, 1, icmpErrorMsg(3, 1, ipv4Packet(vantage, target, 1, req), 12))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMatcher(testKey, testID, tt.checkID, timeout, testEpoch)
			var got []Result
			done := func(r Result) { got = append(got, r) }
			m.mu.Lock()
			c := m.register(target, sent, done)
			m.mu.Unlock()
			req := request(target, c, sent)
			for range tt.before {
				judge(t, m, ipv4Packet(target, vantage, 1, reply(req)), now)
			}
			at := now
			if tt.at != 0 {
				at = tt.at
			}
			got = got[:0]
			v, cs := judge(t, m, tt.give(req), at)
			if v != tt.want {
				t.Fatalf("verdict %d, want %d", v, tt.want)
			}
			complete(cs)
			if tt.want != vMatched && tt.want != vMatchedError {
				if len(got) != 0 {
					t.Fatalf("rejected message completed a probe: %+v", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("%d completions, want 1", len(got))
			}
			r := got[0]
			want := Result{
				Target:    Target{Kind: KindICMP, Addr: netip.AddrFrom4(target)},
				Sent:      testEpoch.Add(time.Duration(sent)),
				RTT:       time.Duration(at - sent),
				Outcome:   tt.wantRes,
				Responder: netip.AddrFrom4(tt.from),
			}
			if r != want {
				t.Errorf("result %+v, want %+v", r, want)
			}
		})
	}
}

// judge parses a raw IPv4 packet and hands it to m at time at.
func judge(t *testing.T, m *matcher, pkt []byte, at int64) (verdict, []completion) {
	t.Helper()
	var p packet
	v := vMalformed
	if from, b, ok := parseIPv4(pkt); ok {
		v = parseICMP(from, b, &p)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cs, v := m.handle(&p, v, at, nil)
	return v, cs
}

func TestMatcherExpiresInOrder(t *testing.T) {
	const timeout = time.Second
	m := newMatcher(testKey, testID, true, timeout, testEpoch)
	var outcomes []Outcome
	done := func(r Result) { outcomes = append(outcomes, r.Outcome) }
	addrs := [][4]byte{{198, 19, 0, 1}, {198, 19, 0, 2}, {198, 19, 0, 3}}
	var reqs [][]byte
	m.mu.Lock()
	for i, a := range addrs {
		s := int64(i) * int64(100*time.Millisecond)
		reqs = append(reqs, request(a, m.register(a, s, done), s))
	}
	m.mu.Unlock()
	// The second probe is answered; then time passes the first two
	// deadlines but not the third.
	_, cs := judge(t, m, ipv4Packet(addrs[1], vantage, 1, reply(reqs[1])), int64(150*time.Millisecond))
	complete(cs)
	m.mu.Lock()
	complete(m.expireUntil(int64(timeout+150*time.Millisecond), nil))
	m.mu.Unlock()
	if want := []Outcome{Reply, Timeout}; !equalOutcomes(outcomes, want) {
		t.Fatalf("outcomes %v, want %v", outcomes, want)
	}
	if got := m.inFlight(); got != 1 {
		t.Errorf("in flight %d, want 1", got)
	}
	// The first probe's reply, now late, is stale and completes nothing.
	v, cs := judge(t, m, ipv4Packet(addrs[0], vantage, 1, reply(reqs[0])), int64(timeout+160*time.Millisecond))
	if v != vStale || len(cs) != 0 {
		t.Errorf("late reply: verdict %d with %d completions, want stale, none", v, len(cs))
	}
	st := m.stats()
	if st.Timeouts != 1 || st.Replies != 1 || st.Stale != 1 {
		t.Errorf("stats %+v, want 1 timeout, 1 reply, 1 stale", st)
	}
}

func equalOutcomes(a, b []Outcome) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestMatcherGrowsAndWraps keeps more than 65,536 probes in flight (so
// sequence numbers repeat) through ring growth, answers them in reverse
// order, and checks each reply completes its own probe.
func TestMatcherGrowsAndWraps(t *testing.T) {
	const n = 70_000
	m := newMatcher(testKey, testID, true, time.Hour, testEpoch)
	got := make([]int, n)
	reqs := make([][]byte, n)
	m.mu.Lock()
	for i := range n {
		a := [4]byte{198, 19, byte(i >> 8), byte(i)}
		reqs[i] = request(a, m.register(a, int64(i), func(r Result) {
			if r.Target.Addr != netip.AddrFrom4(a) || r.Outcome != Reply {
				t.Errorf("probe %d completed with %+v", i, r)
			}
			got[i]++
		}), int64(i))
	}
	m.mu.Unlock()
	for i := n - 1; i >= 0; i-- {
		a := [4]byte{198, 19, byte(i >> 8), byte(i)}
		v, cs := judge(t, m, ipv4Packet(a, vantage, 1, reply(reqs[i])), n)
		if v != vMatched {
			t.Fatalf("probe %d: verdict %d", i, v)
		}
		complete(cs)
	}
	for i, g := range got {
		if g != 1 {
			t.Fatalf("probe %d completed %d times", i, g)
		}
	}
	if len(m.ring) < n {
		t.Errorf("ring of %d slots holds %d probes", len(m.ring), n)
	}
}

func TestMatcherAbandon(t *testing.T) {
	m := newMatcher(testKey, testID, true, time.Hour, testEpoch)
	var got []Result
	m.mu.Lock()
	m.register([4]byte{198, 19, 0, 1}, 0, func(r Result) { got = append(got, r) })
	cs := m.abandon(nil)
	m.mu.Unlock()
	complete(cs)
	if len(got) != 1 || got[0].Outcome != Error || got[0].Err != ErrClosed.Error() {
		t.Fatalf("abandoned probes completed with %+v, want one Error", got)
	}
}

func TestChecksum(t *testing.T) {
	tests := []struct {
		name string
		give []byte
		want uint16
	}{
		// RFC 1071 section 3's example: 00 01 f2 03 f4 f5 f6 f7 sums
		// to ddf2, complemented 220d.
		{"rfc 1071 example", []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0x220d},
		{"odd length pads with zero", []byte{0x01}, 0xfeff},
		{"empty", nil, 0xffff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checksum(tt.give); got != tt.want {
				t.Errorf("checksum = %#04x, want %#04x", got, tt.want)
			}
		})
	}
}
