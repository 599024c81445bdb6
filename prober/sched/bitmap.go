package sched

import "math/bits"

// bitmap is a set of host octets: 32 bytes for a whole /24.
type bitmap [4]uint64

func (m *bitmap) set(h uint8)      { m[h>>6] |= 1 << (h & 63) }
func (m *bitmap) clear(h uint8)    { m[h>>6] &^= 1 << (h & 63) }
func (m *bitmap) has(h uint8) bool { return m[h>>6]&(1<<(h&63)) != 0 }

func (m *bitmap) count() int {
	return bits.OnesCount64(m[0]) + bits.OnesCount64(m[1]) + bits.OnesCount64(m[2]) + bits.OnesCount64(m[3])
}

// each calls f for every member in ascending order.
func (m *bitmap) each(f func(h uint8)) {
	for w, x := range m {
		for x != 0 {
			f(uint8(w*64 + bits.TrailingZeros64(x)))
			x &= x - 1
		}
	}
}
