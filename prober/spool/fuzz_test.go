package spool

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// segBytes builds a well-formed segment holding records first…last.
func segBytes(first, last uint64) []byte {
	b := encodeHeader(first)
	for q := first; q <= last; q++ {
		b = appendFrame(b, q, int64(q), payload(q))
	}
	return b
}

// seedSegments are starting points for the fuzzer: a healthy segment for
// seqs 4…6 and damaged variants of it.
func seedSegments(f *testing.F) {
	good := segBytes(4, 6)
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add(good[:headerLen])
	f.Add(good[:headerLen-1])
	f.Add([]byte{})
	f.Add(make([]byte, 200))
	flipped := bytes.Clone(good)
	flipped[headerLen+frameHeaderLen+2] ^= 0x10
	f.Add(flipped)
	noHeader := bytes.Clone(good)
	clear(noHeader[:headerLen])
	f.Add(noHeader)
	f.Add(append(bytes.Clone(good), segBytes(9, 9)[headerLen:]...)) // a gap
}

// FuzzSegment feeds arbitrary bytes as a segment between two healthy ones
// (seqs 1…3 before it, 20…22 after). Whatever the bytes, nothing panics,
// the healthy segments come out whole, what comes out of the fuzzed one is
// in order and within its range, and every seq is either delivered or
// counted lost.
func FuzzSegment(f *testing.F) {
	seedSegments(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		write := func(first uint64, b []byte) {
			if err := os.WriteFile(filepath.Join(dir, segName(first)), b, 0o640); err != nil {
				t.Fatal(err)
			}
		}
		write(1, segBytes(1, 3))
		write(4, data)
		write(20, segBytes(20, 22))

		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer s.Close()
		rs := drain(t, s)
		if len(rs) < 6 {
			t.Fatalf("got %s, want at least 1-3 and 20-22", summary(seqs(rs)))
		}
		checkRecords(t, rs[:3], span(1, 3))
		checkRecords(t, rs[len(rs)-3:], span(20, 22))
		mid := rs[3 : len(rs)-3]
		for i, r := range mid {
			if r.Seq < 4 || r.Seq >= 20 || i > 0 && r.Seq <= mid[i-1].Seq {
				t.Fatalf("from the fuzzed segment: %s", summary(seqs(mid)))
			}
		}
		if got := uint64(len(rs)) + s.Lost(); got != 22 {
			t.Fatalf("%d delivered + %d lost = %d, want 22", len(rs), s.Lost(), got)
		}
	})
}

// FuzzLastSegment feeds arbitrary bytes as the newest segment, the one
// Open repairs. Open must cope; afterwards appending continues the
// sequence, and a reopen finds a clean spool.
func FuzzLastSegment(f *testing.F) {
	seedSegments(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), segBytes(1, 3), 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, segName(4)), data, 0o640); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer s.Close()
		rs := replayAll(t, s)
		if len(rs) < 3 {
			t.Fatalf("got %s, want at least 1-3", summary(seqs(rs)))
		}
		checkRecords(t, rs[:3], span(1, 3))
		for i := 3; i < len(rs); i++ {
			if rs[i].Seq <= rs[i-1].Seq {
				t.Fatalf("out of order: %s", summary(seqs(rs)))
			}
		}
		last := s.nextSeq - 1
		if got := uint64(len(rs)) + s.Lost(); got != last {
			t.Fatalf("%d delivered + %d lost = %d, want %d", len(rs), s.Lost(), got, last)
		}
		seq, err := s.Append([]byte("after"))
		if err != nil || seq != last+1 {
			t.Fatalf("Append = %d, %v; want %d", seq, err, last+1)
		}
		s.Close()

		s, err = Open(dir, Options{OnCorrupt: func(e *CorruptError) { t.Errorf("reopen reports %v", e) }})
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer s.Close()
		rs = drain(t, s)
		if len(rs) != 1 || rs[0].Seq != last+1 || string(rs[0].Data) != "after" {
			t.Fatalf("after reopen got %s, want only %d", summary(seqs(rs)), last+1)
		}
	})
}
