package prober

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// flight is one probe in the in-flight ring.
type flight struct {
	counter uint64 // the probe's number; 0 marks a never-used slot
	sent    int64  // ns since the matcher's epoch
	cookie  uint64
	addr    [4]byte
	live    bool // not yet answered, timed out or failed
	done    func(Result)
}

// completion is a result waiting to be handed to its callback once the
// matcher's lock is released (a callback may call Probe again).
type completion struct {
	done func(Result)
	res  Result
}

// matcher is the ICMP engine's core without sockets: it numbers and signs
// probes, keeps them in flight, and judges every received ICMP message.
// Probes are numbered by a counter and kept in a ring indexed by it; since
// every probe has the same timeout, they expire in the order they were
// sent, so the ring is also the timeout queue: no timer per probe, no map.
type matcher struct {
	key     sipKey
	id      uint16 // our echo identifier (the kernel's, on ping sockets)
	checkID bool   // raw sockets see every host's ICMP; ping sockets only ours
	timeout int64
	epoch   time.Time

	mu   sync.Mutex
	ring []flight // len is a power of two
	head uint64   // next counter to hand out
	tail uint64   // oldest counter that may still be live

	counts [verdictCount]atomic.Uint64
	sent   atomic.Uint64
	failed atomic.Uint64
	expire atomic.Uint64
}

func newMatcher(key sipKey, id uint16, checkID bool, timeout time.Duration, epoch time.Time) *matcher {
	return &matcher{
		key: key, id: id, checkID: checkID, timeout: int64(timeout), epoch: epoch,
		ring: make([]flight, 1<<12), head: 1, tail: 1,
	}
}

// offset converts a clock reading to ns since the epoch.
func (m *matcher) offset(t time.Time) int64 { return int64(t.Sub(m.epoch)) }

// register adds a probe to addr sent at time sent (an offset) and returns
// its counter. The caller holds m.mu.
func (m *matcher) register(addr [4]byte, sent int64, done func(Result)) uint64 {
	if m.head-m.tail == uint64(len(m.ring)) {
		m.grow()
	}
	c := m.head
	m.head++
	seq := uint16(c)
	m.ring[c&uint64(len(m.ring)-1)] = flight{
		counter: c, sent: sent, addr: addr, live: true, done: done,
		cookie: m.key.cookie(addr, m.id, seq, c, sent),
	}
	return c
}

// grow doubles the ring; counters keep their meaning, slots move.
func (m *matcher) grow() {
	ring := make([]flight, 2*len(m.ring))
	om, nm := uint64(len(m.ring)-1), uint64(len(ring)-1)
	for c := m.tail; c < m.head; c++ {
		ring[c&nm] = m.ring[c&om]
	}
	m.ring = ring
}

func (m *matcher) slot(c uint64) *flight { return &m.ring[c&uint64(len(m.ring)-1)] }

func (m *matcher) result(f *flight, o Outcome) Result {
	return Result{
		Target:  Target{Kind: KindICMP, Addr: netip.AddrFrom4(f.addr)},
		Sent:    m.epoch.Add(time.Duration(f.sent)),
		Outcome: o,
	}
}

// fail completes probe c with an Error (its send failed). The caller
// holds m.mu.
func (m *matcher) fail(c uint64, err error, out []completion) []completion {
	f := m.slot(c)
	if f.counter != c || !f.live {
		return out
	}
	f.live = false
	m.failed.Add(1)
	r := m.result(f, Error)
	r.Err = err.Error()
	return append(out, completion{f.done, r})
}

// handle judges one parsed message received at now (an offset), appending
// the completion it causes, if any, to out. The caller holds m.mu.
func (m *matcher) handle(p *packet, v verdict, now int64, out []completion) ([]completion, verdict) {
	v = m.judge(p, v, now, &out)
	m.counts[v].Add(1)
	return out, v
}

func (m *matcher) judge(p *packet, v verdict, now int64, out *[]completion) verdict {
	if v != vReply && v != vError {
		return v
	}
	if m.checkID && p.id != m.id {
		return vWrongID
	}
	var f *flight
	if p.hasPayload {
		if uint16(p.counter) != p.seq ||
			p.cookie != m.key.cookie(p.dst, p.id, p.seq, p.counter, p.sent) {
			return vForged
		}
		if p.counter < m.tail || now-p.sent > m.timeout {
			return vStale
		}
		if p.counter >= m.head {
			return vForged // signed by us, but never sent: cannot happen without the key
		}
		f = m.slot(p.counter)
		if f.counter != p.counter || f.cookie != p.cookie {
			return vForged
		}
	} else {
		if v == vReply {
			return vForged // ours always carry the payload back
		}
		// An error that quoted only 8 bytes: find the live probe to
		// this destination with this sequence number (a handful of
		// candidates at most: one per 65,536 probes in flight).
		f = m.findQuoted(p.dst, p.seq)
		if f == nil {
			return vStale
		}
	}
	if !f.live {
		return vDuplicate
	}
	f.live = false
	o, v := Reply, vMatched
	if p.typ != icmpEchoReply {
		o, v = Unreachable, vMatchedError
	}
	r := m.result(f, o)
	r.RTT = time.Duration(now - f.sent)
	r.Responder = netip.AddrFrom4(p.from)
	*out = append(*out, completion{f.done, r})
	return v
}

// findQuoted returns the oldest live probe to dst with sequence seq.
func (m *matcher) findQuoted(dst [4]byte, seq uint16) *flight {
	c := m.tail + uint64(seq-uint16(m.tail))
	for ; c < m.head; c += 1 << 16 {
		if f := m.slot(c); f.live && f.addr == dst {
			return f
		}
	}
	return nil
}

// expireUntil times out every live probe sent at least a timeout before
// now and forgets every probe that old. The caller holds m.mu.
func (m *matcher) expireUntil(now int64, out []completion) []completion {
	for m.tail < m.head {
		f := m.slot(m.tail)
		if now-f.sent < m.timeout {
			break
		}
		if f.live {
			f.live = false
			m.expire.Add(1)
			out = append(out, completion{f.done, m.result(f, Timeout)})
		}
		f.done = nil // let the callback's closure be collected
		m.tail++
	}
	return out
}

// abandon completes every live probe with an Error: the engine is
// closing. The caller holds m.mu.
func (m *matcher) abandon(out []completion) []completion {
	for ; m.tail < m.head; m.tail++ {
		f := m.slot(m.tail)
		if f.live {
			f.live = false
			r := m.result(f, Error)
			r.Err = ErrClosed.Error()
			out = append(out, completion{f.done, r})
		}
		f.done = nil
	}
	return out
}

// inFlight is the number of probes in the ring's window.
func (m *matcher) inFlight() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int(m.head - m.tail)
}

func complete(cs []completion) {
	for _, c := range cs {
		c.done(c.res)
	}
}

// ICMPStats counts what an ICMP engine sent and received. Every received
// ICMP message lands in exactly one of Replies, Unreachable or a rejection
// counter.
type ICMPStats struct {
	Sent       uint64 // echo requests written to the socket
	SendErrors uint64 // probes whose write failed (completed as Error)
	Replies    uint64 // echo replies matched to a probe
	// Unreachable counts ICMP errors matched to a probe.
	Unreachable uint64
	Timeouts    uint64 // probes that got no acceptable answer in time

	// Rejected messages, by reason.
	Malformed uint64 // truncated, bad checksum, bad quoted header
	Foreign   uint64 // other ICMP types, errors about non-echo packets
	WrongID   uint64 // someone else's echo identifier
	Forged    uint64 // our identifier, but the cookie does not verify
	Stale     uint64 // ours, after its probe timed out (late or replayed)
	Duplicate uint64 // ours, after its probe was answered (duplicated or replayed)
}

// Rejected is the total of the rejection counters.
func (s ICMPStats) Rejected() uint64 {
	return s.Malformed + s.Foreign + s.WrongID + s.Forged + s.Stale + s.Duplicate
}

func (m *matcher) stats() ICMPStats {
	return ICMPStats{
		Sent:        m.sent.Load(),
		SendErrors:  m.failed.Load(),
		Timeouts:    m.expire.Load(),
		Replies:     m.counts[vMatched].Load(),
		Unreachable: m.counts[vMatchedError].Load(),
		Malformed:   m.counts[vMalformed].Load(),
		Foreign:     m.counts[vForeign].Load(),
		WrongID:     m.counts[vWrongID].Load(),
		Forged:      m.counts[vForged].Load(),
		Stale:       m.counts[vStale].Load(),
		Duplicate:   m.counts[vDuplicate].Load(),
	}
}
