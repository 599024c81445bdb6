package prober

import (
	"encoding/binary"

	"golang.org/x/net/icmp"
)

// Wire format of cutoff's echo requests (IPv4):
//
//	0      type 8, code 0, checksum, identifier, sequence (8 bytes)
//	8      counter: the engine's 64-bit probe number (sequence = its low 16 bits)
//	16     send time: nanoseconds since the engine started
//	24     cookie: SipHash-2-4 of (destination, identifier, sequence, counter,
//	       send time) under the engine's per-process secret key
//	32     text naming the project and where to opt out
//
// The counter finds the probe's slot in the in-flight ring without a map,
// and lets more than 65,536 probes be in flight on ping sockets, whose
// identifier the kernel fixes. The cookie makes the counter and send time
// trustworthy: a reply whose cookie does not verify is forged.
const (
	icmpHeaderLen  = 8
	echoFixedLen   = 24 // counter, send time, cookie
	echoPayloadOff = icmpHeaderLen
	echoTextOff    = icmpHeaderLen + echoFixedLen

	icmpEchoReply   = 0
	icmpUnreachable = 3
	icmpEcho        = 8
	icmpTimeExceed  = 11
)

// cookie signs one probe. Changing any of its inputs changes it.
func (k sipKey) cookie(dst [4]byte, id, seq uint16, counter uint64, sent int64) uint64 {
	var b [24]byte
	copy(b[0:4], dst[:])
	binary.BigEndian.PutUint16(b[4:6], id)
	binary.BigEndian.PutUint16(b[6:8], seq)
	binary.BigEndian.PutUint64(b[8:16], counter)
	binary.BigEndian.PutUint64(b[16:24], uint64(sent))
	return k.sum(b[:])
}

// putEcho writes an echo request into b, whose bytes from echoTextOff on
// already hold the payload text; it returns nothing because the length
// is fixed by the text. The checksum is filled in even though ping
// sockets recompute it.
func putEcho(b []byte, k sipKey, dst [4]byte, id uint16, counter uint64, sent int64) {
	seq := uint16(counter)
	b[0], b[1], b[2], b[3] = icmpEcho, 0, 0, 0
	binary.BigEndian.PutUint16(b[4:6], id)
	binary.BigEndian.PutUint16(b[6:8], seq)
	binary.BigEndian.PutUint64(b[8:16], counter)
	binary.BigEndian.PutUint64(b[16:24], uint64(sent))
	binary.BigEndian.PutUint64(b[24:32], k.cookie(dst, id, seq, counter, sent))
	binary.BigEndian.PutUint16(b[2:4], checksum(b))
}

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	var s uint32
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// verdict says what a received ICMP message is to the engine.
type verdict uint8

const (
	vReply        verdict = iota + 1 // an echo reply, to be matched
	vError                           // an ICMP error quoting an echo request
	vMalformed                       // truncated, bad checksum, bad quoted header
	vForeign                         // ICMP that is none of our business
	vWrongID                         // an echo reply or quoted request with another identifier
	vForged                          // ours by identifier, but the cookie does not verify
	vStale                           // ours, but its probe timed out already
	vDuplicate                       // ours, but its probe was answered already
	vMatched                         // an echo reply that completed an in-flight probe
	vMatchedError                    // an ICMP error that completed an in-flight probe
	verdictCount
)

// packet is a parsed ICMP message that may concern one of our probes.
type packet struct {
	from    [4]byte // who sent the ICMP message: the target, or a router
	dst     [4]byte // the probe's destination (from for replies; the quoted destination for errors)
	typ     uint8
	code    uint8
	id, seq uint16
	// The probe's payload fields; hasPayload is false when an ICMP error
	// quoted only the first 8 bytes of our request (RFC 792's minimum).
	hasPayload bool
	counter    uint64
	sent       int64
	cookie     uint64
}

// parseIPv4 strips and checks the IPv4 header that raw sockets deliver,
// returning the source address and the ICMP message.
func parseIPv4(b []byte) (src [4]byte, icmp []byte, ok bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return src, nil, false
	}
	hl := int(b[0]&0x0f) << 2
	tl := int(binary.BigEndian.Uint16(b[2:4]))
	if hl < 20 || len(b) < hl || b[9] != 1 {
		return src, nil, false
	}
	if tl >= hl && tl < len(b) {
		b = b[:tl]
	}
	copy(src[:], b[12:16])
	return src, b[hl:], true
}

// parseICMP parses an ICMP message m sent by from. It returns vReply or
// vError with p filled in, or the reason m is not for us.
func parseICMP(from [4]byte, m []byte, p *packet) verdict {
	if len(m) < icmpHeaderLen {
		return vMalformed
	}
	if checksum(m) != 0 {
		return vMalformed
	}
	*p = packet{from: from, typ: m[0], code: m[1]}
	switch m[0] {
	case icmpEchoReply:
		if m[1] != 0 {
			return vMalformed
		}
		p.dst = from
		p.id = binary.BigEndian.Uint16(m[4:6])
		p.seq = binary.BigEndian.Uint16(m[6:8])
		if len(m) < echoTextOff {
			// Not one of ours (ours always carry the fixed part), but
			// the identifier decides which counter it lands in.
			return vReply
		}
		readPayload(m[echoPayloadOff:], p)
		return vReply
	case icmpUnreachable, icmpTimeExceed:
		// RFC 792: unused word, then the quoted IP header and at least
		// 8 bytes of the quoted datagram; RFC 4884 may append extensions
		// after it, which x/net/icmp separates. Errors are rare next to
		// replies, so its allocations cost nothing that shows; echo
		// replies, the hot path, are read in place above.
		msg, err := icmp.ParseMessage(1, m) // 1: IANA protocol number of ICMP
		if err != nil {
			return vMalformed
		}
		var q []byte
		switch b := msg.Body.(type) {
		case *icmp.DstUnreach:
			q = b.Data
		case *icmp.TimeExceeded:
			q = b.Data
		default:
			return vMalformed
		}
		dst, echo, v := parseQuoted(q)
		if v != vError {
			return v
		}
		p.dst = dst
		return parseQuotedEcho(echo, p)
	}
	return vForeign
}

// parseQuoted checks the IPv4 header an ICMP error quotes and returns the
// quoted datagram's destination and its ICMP part.
func parseQuoted(q []byte) (dst [4]byte, icmp []byte, v verdict) {
	if len(q) < 20 || q[0]>>4 != 4 {
		return dst, nil, vMalformed
	}
	hl := int(q[0]&0x0f) << 2
	if hl < 20 || len(q) < hl {
		return dst, nil, vMalformed
	}
	if q[9] != 1 {
		return dst, nil, vForeign // about a TCP or UDP packet, not ours
	}
	copy(dst[:], q[16:20])
	return dst, q[hl:], vError
}

// parseQuotedEcho reads the echo request an ICMP error quotes (possibly
// truncated after 8 bytes) into p.
func parseQuotedEcho(e []byte, p *packet) verdict {
	if len(e) < icmpHeaderLen {
		return vMalformed
	}
	if e[0] != icmpEcho {
		return vForeign
	}
	p.id = binary.BigEndian.Uint16(e[4:6])
	p.seq = binary.BigEndian.Uint16(e[6:8])
	if len(e) >= echoTextOff {
		readPayload(e[echoPayloadOff:], p)
	}
	return vError
}

func readPayload(b []byte, p *packet) {
	p.hasPayload = true
	p.counter = binary.BigEndian.Uint64(b[0:8])
	p.sent = int64(binary.BigEndian.Uint64(b[8:16]))
	p.cookie = binary.BigEndian.Uint64(b[16:24])
}
