package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/cutoffnet/cutoff/store"
)

// The spool holds batches in a compact binary form of our own: the format
// outlives any one version of the agent (a spool written before an upgrade
// is replayed after it), so it is versioned and owned here rather than left
// to a general-purpose encoder.
//
//	"CSB" version(1) vantage(str) nResults(uvarint) nObservations(uvarint)
//	result:      kind(1) addr port(uvarint) sent(varint ns) rtt(varint ns)
//	             outcome(1) responder rcode(varint) round(varint)
//	observation: block unit at(varint ns) sent(varint ns) round(varint)
//	             state(1) belief(float32) probes(uvarint) replies(uvarint)
//	addr:        0 (none) | 4 + 4 bytes | 6 + 16 bytes
//	prefix:      addr bits(1)
//	str:         length(uvarint) bytes
const codecVersion = 1

var errCodec = errors.New("malformed spooled batch")

var (
	kinds    = []string{"icmp", "tcp", "dns"}
	outcomes = []string{"reply", "refused", "timeout", "unreachable", "error"}
	states   = []string{"up", "down", "uncertain", "unmeasurable"}
)

func indexOf(list []string, s string) (byte, error) {
	for i, v := range list {
		if v == s {
			return byte(i), nil
		}
	}
	return 0, fmt.Errorf("encode batch: unknown value %q", s)
}

func appendAddr(b []byte, a netip.Addr) []byte {
	switch {
	case !a.IsValid():
		return append(b, 0)
	case a.Is4():
		v := a.As4()
		return append(append(b, 4), v[:]...)
	default:
		v := a.As16()
		return append(append(b, 6), v[:]...)
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encodeBatch encodes one vantage's batch.
func encodeBatch(b *store.Batch) ([]byte, error) {
	vantage := ""
	if len(b.Results) > 0 {
		vantage = b.Results[0].Vantage
	} else if len(b.Observations) > 0 {
		vantage = b.Observations[0].Vantage
	}
	out := make([]byte, 0, 16+40*len(b.Results)+48*len(b.Observations))
	out = append(out, 'C', 'S', 'B', codecVersion)
	out = appendString(out, vantage)
	out = binary.AppendUvarint(out, uint64(len(b.Results)))
	out = binary.AppendUvarint(out, uint64(len(b.Observations)))
	for i := range b.Results {
		r := &b.Results[i]
		if r.Vantage != vantage {
			return nil, fmt.Errorf("encode batch: results of vantages %q and %q in one batch", vantage, r.Vantage)
		}
		k, err := indexOf(kinds, r.Kind)
		if err != nil {
			return nil, err
		}
		o, err := indexOf(outcomes, r.Outcome)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
		out = appendAddr(out, r.Addr)
		out = binary.AppendUvarint(out, uint64(r.Port))
		out = binary.AppendVarint(out, r.SentAt.UnixNano())
		out = binary.AppendVarint(out, int64(r.RTT))
		out = append(out, o)
		out = appendAddr(out, r.Responder)
		out = binary.AppendVarint(out, int64(r.Rcode))
		out = binary.AppendVarint(out, r.Round)
	}
	for i := range b.Observations {
		o := &b.Observations[i]
		if o.Vantage != vantage {
			return nil, fmt.Errorf("encode batch: observations of vantages %q and %q in one batch", vantage, o.Vantage)
		}
		s, err := indexOf(states, o.State)
		if err != nil {
			return nil, err
		}
		out = append(appendAddr(out, o.Block.Addr()), byte(o.Block.Bits()))
		out = append(appendAddr(out, o.Unit.Addr()), byte(o.Unit.Bits()))
		out = binary.AppendVarint(out, o.At.UnixNano())
		out = binary.AppendVarint(out, o.SentAt.UnixNano())
		out = binary.AppendVarint(out, o.Round)
		out = append(out, s)
		out = binary.BigEndian.AppendUint32(out, math.Float32bits(float32(o.Belief)))
		out = binary.AppendUvarint(out, uint64(o.Probes))
		out = binary.AppendUvarint(out, uint64(o.Replies))
	}
	return out, nil
}

// decoder reads the format above, failing (never panicking) on damage.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCodec
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || n < 0 || len(d.b) < n {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) addr() netip.Addr {
	switch d.byte() {
	case 0:
		return netip.Addr{}
	case 4:
		v := d.bytes(4)
		if d.err != nil {
			return netip.Addr{}
		}
		return netip.AddrFrom4([4]byte(v))
	case 6:
		v := d.bytes(16)
		if d.err != nil {
			return netip.Addr{}
		}
		return netip.AddrFrom16([16]byte(v))
	}
	d.fail()
	return netip.Addr{}
}

func (d *decoder) prefix() netip.Prefix {
	a := d.addr()
	bits := int(d.byte())
	if d.err != nil {
		return netip.Prefix{}
	}
	p := netip.PrefixFrom(a, bits)
	if !p.IsValid() {
		d.fail()
	}
	return p
}

func (d *decoder) pick(list []string) string {
	i := int(d.byte())
	if i >= len(list) {
		d.fail()
		return ""
	}
	return list[i]
}

// decodeBatch decodes what encodeBatch encoded.
func decodeBatch(data []byte) (*store.Batch, error) {
	d := &decoder{b: data}
	if m := d.bytes(3); d.err != nil || string(m) != "CSB" {
		return nil, fmt.Errorf("%w: bad magic", errCodec)
	}
	if v := d.byte(); v != codecVersion {
		return nil, fmt.Errorf("%w: version %d, this agent reads %d", errCodec, v, codecVersion)
	}
	vantage := string(d.bytes(int(min(d.uvarint(), 1<<10))))
	nr, no := d.uvarint(), d.uvarint()
	// Every record takes at least a few bytes: refuse counts the data
	// cannot hold before allocating for them.
	if d.err != nil || nr > uint64(len(d.b)) || no > uint64(len(d.b)) {
		return nil, errCodec
	}
	b := &store.Batch{}
	if nr > 0 {
		b.Results = make([]store.Result, 0, nr)
	}
	if no > 0 {
		b.Observations = make([]store.Observation, 0, no)
	}
	for range nr {
		r := store.Result{Vantage: vantage}
		r.Kind = d.pick(kinds)
		r.Addr = d.addr()
		r.Port = uint16(d.uvarint())
		r.SentAt = time.Unix(0, d.varint()).UTC()
		r.RTT = time.Duration(d.varint())
		r.Outcome = d.pick(outcomes)
		r.Responder = d.addr()
		r.Rcode = int(d.varint())
		r.Round = d.varint()
		if d.err != nil {
			return nil, d.err
		}
		b.Results = append(b.Results, r)
	}
	for range no {
		o := store.Observation{Vantage: vantage}
		o.Block = d.prefix()
		o.Unit = d.prefix()
		o.At = time.Unix(0, d.varint()).UTC()
		o.SentAt = time.Unix(0, d.varint()).UTC()
		o.Round = d.varint()
		o.State = d.pick(states)
		if v := d.bytes(4); d.err == nil {
			o.Belief = float64(math.Float32frombits(binary.BigEndian.Uint32(v)))
		}
		o.Probes = int(d.uvarint())
		o.Replies = int(d.uvarint())
		if d.err != nil {
			return nil, d.err
		}
		b.Observations = append(b.Observations, o)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes left over", errCodec, len(d.b))
	}
	return b, nil
}
