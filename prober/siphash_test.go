package prober

import "testing"

// TestSipHashVectors checks sum against the reference vectors of the
// SipHash paper (Appendix A / vectors.h of the reference implementation):
// key 00 01 … 0f, message 00 01 … (n-1).
func TestSipHashVectors(t *testing.T) {
	var kb [16]byte
	for i := range kb {
		kb[i] = byte(i)
	}
	k := newSipKey(kb)
	tests := []struct {
		name string
		give int // message length
		want uint64
	}{
		{"empty", 0, 0x726fdb47dd0e0e31},
		{"one byte", 1, 0x74f839c593dc67fd},
		{"seven bytes", 7, 0xab0200f58b01d137},
		{"eight bytes", 8, 0x93f5f5799a932462},
		{"fifteen bytes", 15, 0xa129ca6149be45e5},
		{"sixty-three bytes", 63, 0x958a324ceb064572},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := make([]byte, tt.give)
			for i := range msg {
				msg[i] = byte(i)
			}
			if got := k.sum(msg); got != tt.want {
				t.Errorf("sum(%d bytes) = %#x, want %#x", tt.give, got, tt.want)
			}
		})
	}
}
