package agent

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/store"
)

func randomBatch(rng *rand.Rand, n int) *store.Batch {
	b := &store.Batch{}
	base := time.Date(2014, 12, 22, 16, 15, 0, 0, time.UTC)
	for i := range n {
		a := netip.AddrFrom4([4]byte{198, 19, byte(rng.IntN(4)), byte(rng.IntN(256))})
		r := store.Result{Vantage: "vp1", Kind: kinds[rng.IntN(3)], Addr: a, SentAt: base.Add(time.Duration(rng.Int64N(1e12))),
			RTT: time.Duration(rng.Int64N(5e9)), Outcome: outcomes[rng.IntN(5)], Round: int64(i)}
		if rng.IntN(2) == 0 {
			r.Responder = a
		}
		if r.Kind == "tcp" {
			r.Port = 443
		}
		if r.Kind == "dns" {
			r.Port, r.Rcode = 53, rng.IntN(6)
		}
		if i%7 == 0 {
			r.Addr = netip.MustParseAddr("2001:db8::1")
		}
		b.Results = append(b.Results, r)
		if i%3 == 0 {
			blk := netip.PrefixFrom(a, 24).Masked()
			b.Observations = append(b.Observations, store.Observation{Vantage: "vp1", Block: blk, Unit: blk,
				At: base.Add(time.Duration(i) * time.Second), SentAt: base.Add(time.Duration(i)*time.Second - time.Millisecond),
				Round: int64(i), State: states[rng.IntN(4)], Belief: float64(float32(rng.Float64())), Probes: rng.IntN(16), Replies: rng.IntN(16)})
		}
	}
	return b
}

func TestCodecRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 10, 1000} {
		b := randomBatch(rng, n)
		data, err := encodeBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeBatch(data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, b) {
			t.Fatalf("n=%d: round trip changed the batch", n)
		}
	}
}

func TestCodecRejects(t *testing.T) {
	good, _ := encodeBatch(randomBatch(rand.New(rand.NewPCG(3, 4)), 20))
	tests := []struct {
		name string
		give []byte
	}{
		{"empty", nil},
		{"bad magic", append([]byte("XSB"), good[3:]...)},
		{"future version", append([]byte{'C', 'S', 'B', 99}, good[4:]...)},
		{"truncated", good[:len(good)/2]},
		{"trailing garbage", append(append([]byte(nil), good...), 1, 2, 3)},
		{"huge count", []byte{'C', 'S', 'B', 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeBatch(tt.give); !errors.Is(err, errCodec) {
				t.Fatalf("decodeBatch = %v, want errCodec", err)
			}
		})
	}
	mixed := &store.Batch{Results: []store.Result{{Vantage: "a", Kind: "icmp", Outcome: "reply"}, {Vantage: "b", Kind: "icmp", Outcome: "reply"}}}
	if _, err := encodeBatch(mixed); err == nil {
		t.Fatal("encoded a batch of two vantages")
	}
}

func FuzzDecodeBatch(f *testing.F) {
	good, _ := encodeBatch(randomBatch(rand.New(rand.NewPCG(5, 6)), 5))
	f.Add(good)
	f.Add([]byte("CSB\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := decodeBatch(data)
		if err != nil {
			return
		}
		// Whatever decodes encodes back to the same bytes.
		again, err := encodeBatch(b)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		b2, err := decodeBatch(again)
		if err != nil || !reflect.DeepEqual(b, b2) {
			t.Fatalf("decode(encode(decode(x))) differs: %v", err)
		}
	})
}
