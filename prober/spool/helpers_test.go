package spool

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"
)

// payload is the deterministic content of the n-th record a test appends,
// with a length that varies so frames straddle segment ends at odd places.
func payload(n uint64) []byte {
	b := make([]byte, 1+int(n*37%100))
	for i := range b {
		b[i] = byte(n*131 + uint64(i)*7)
	}
	copy(b, fmt.Sprintf("rec-%d:", n))
	return b
}

// reports collects what OnCorrupt receives.
type reports struct {
	mu   sync.Mutex
	errs []*CorruptError
}

func (r *reports) add(e *CorruptError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, e)
}

func (r *reports) all() []*CorruptError {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

// open opens dir with opt, collecting corruption reports, and closes it
// when the test ends.
func open(t testing.TB, dir string, opt Options) (*Spool, *reports) {
	t.Helper()
	rep := &reports{}
	opt.OnCorrupt = rep.add
	s, err := Open(dir, opt)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, rep
}

// appendN appends records payload(from) … payload(from+n-1) one by one and
// checks they get the expected sequence numbers.
func appendN(t testing.TB, s *Spool, from, n uint64) {
	t.Helper()
	for i := from; i < from+n; i++ {
		seq, err := s.Append(payload(i))
		if err != nil {
			t.Fatalf("Append(%d): %v", i, err)
		}
		if seq != i {
			t.Fatalf("Append(%d) got seq %d", i, seq)
		}
	}
}

// drain returns every record Next would return right now, without
// acknowledging any.
func drain(t testing.TB, s *Spool) []Record {
	t.Helper()
	var out []Record
	for {
		s.rmu.Lock()
		rec, ok, err := s.next()
		if err == nil && !ok {
			err = s.settleIdle()
		}
		s.rmu.Unlock()
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		if !ok {
			return out
		}
		out = append(out, rec)
	}
}

// replayAll replays and acknowledges everything pending.
func replayAll(t testing.TB, s *Spool) []Record {
	t.Helper()
	var out []Record
	if err := s.Replay(context.Background(), func(r Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return out
}

func seqs(rs []Record) []uint64 {
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}

// checkRecords fails unless rs are exactly the records want, in order,
// with the payloads payload(seq).
func checkRecords(t testing.TB, rs []Record, want []uint64) {
	t.Helper()
	if got := seqs(rs); !slices.Equal(got, want) {
		t.Fatalf("got seqs %s, want %s", summary(got), summary(want))
	}
	for _, r := range rs {
		if !bytes.Equal(r.Data, payload(r.Seq)) {
			t.Fatalf("record %d: payload differs (%d bytes, want %d)", r.Seq, len(r.Data), len(payload(r.Seq)))
		}
	}
}

// span is the list lo, lo+1, …, hi.
func span(lo, hi uint64) []uint64 {
	var out []uint64
	for i := lo; i <= hi; i++ {
		out = append(out, i)
	}
	return out
}

// summary prints a list of seqs as runs (1-5,9,12-14) so failures stay
// readable.
func summary(xs []uint64) string {
	if len(xs) == 0 {
		return "[]"
	}
	var b bytes.Buffer
	start := xs[0]
	for i := 1; i <= len(xs); i++ {
		if i < len(xs) && xs[i] == xs[i-1]+1 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if start == xs[i-1] {
			fmt.Fprintf(&b, "%d", start)
		} else {
			fmt.Fprintf(&b, "%d-%d", start, xs[i-1])
		}
		if i < len(xs) {
			start = xs[i]
		}
	}
	return "[" + b.String() + "]"
}

// segFiles lists the segment files in dir, oldest first.
func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "seg-*.spool"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// frameOffsets returns the offset and seq of every frame in a healthy
// segment file.
func frameOffsets(t testing.TB, path string) (offs []int64, sq []uint64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, _ := f.Stat()
	for off := int64(headerLen); off < info.Size(); {
		rec, next, err := readFrame(f, off, info.Size())
		if err != nil {
			t.Fatalf("%s at %d: %v", path, off, err)
		}
		offs, sq = append(offs, off), append(sq, rec.Seq)
		off = next
	}
	return offs, sq
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2014, 12, 22, 16, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// flipBit flips one bit of the file at off.
func flipBit(t testing.TB, path string, off int64, bit uint) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= 1 << bit
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
}
