package spool

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRoundTrip appends across many segments and reopenings and replays:
// everything comes back once, in order, byte for byte.
func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		segBytes int64
		total    uint64 // records
		reopen   uint64 // close and reopen after every this many appends
		batch    int    // records per AppendBatch; 1 uses Append
		wantSegs int    // at least this many segment files before replay
	}{
		{"one segment", 1 << 20, 50, 1000, 1, 1},
		{"many segments", 1 << 10, 300, 1000, 1, 20},
		{"reopen often", 1 << 10, 300, 7, 1, 20},
		{"tiny segments", 64, 100, 13, 1, 50},
		{"batches", 4 << 10, 600, 50, 16, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			opt := Options{SegmentBytes: tt.segBytes}
			s, err := Open(dir, opt)
			if err != nil {
				t.Fatal(err)
			}
			for i := uint64(1); i <= tt.total; {
				n := min(uint64(tt.batch), tt.total-i+1)
				var batch [][]byte
				for j := i; j < i+n; j++ {
					batch = append(batch, payload(j))
				}
				first, err := s.AppendBatch(batch)
				if err != nil || first != i {
					t.Fatalf("AppendBatch at %d: first %d, %v", i, first, err)
				}
				i += n
				if (i-1)%tt.reopen < n {
					s.Close()
					if s, err = Open(dir, opt); err != nil {
						t.Fatal(err)
					}
				}
			}
			defer s.Close()
			if got := len(segFiles(t, dir)); got < tt.wantSegs {
				t.Errorf("%d segment files, want at least %d", got, tt.wantSegs)
			}
			if got := s.Pending(); got != tt.total {
				t.Errorf("Pending = %d, want %d", got, tt.total)
			}
			checkRecords(t, replayAll(t, s), span(1, tt.total))
			if s.Pending() != 0 || s.Age() != 0 || s.Corrupt() != 0 {
				t.Errorf("after replay: pending %d, age %v, corrupt %d", s.Pending(), s.Age(), s.Corrupt())
			}
			// Acknowledged segments are gone but the active one.
			if got := len(segFiles(t, dir)); got > 1 {
				t.Errorf("%d segment files left after everything was acknowledged", got)
			}
			s.Close()
			s2, _ := open(t, dir, opt)
			if rs := drain(t, s2); len(rs) != 0 {
				t.Errorf("after reopen, %d acknowledged records came back: %s", len(rs), summary(seqs(rs)))
			}
			appendN(t, s2, tt.total+1, 3)
			checkRecords(t, replayAll(t, s2), span(tt.total+1, tt.total+3))
		})
	}
}

// TestAckPersists: what was acknowledged stays acknowledged across a
// reopen, wherever the acknowledgement falls relative to segment ends, and
// what was not comes back.
func TestAckPersists(t *testing.T) {
	const total = 120
	tests := []struct {
		name string
		give uint64 // Ack(give) after reading that far
	}{
		{"nothing", 0},
		{"first", 1},
		{"middle", 57},
		{"all but one", total - 1},
		{"all", total},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			opt := Options{SegmentBytes: 1 << 10}
			s, _ := open(t, dir, opt)
			appendN(t, s, 1, total)
			before := len(segFiles(t, dir))
			rs := drain(t, s)
			checkRecords(t, rs, span(1, total))
			if tt.give > 0 {
				if err := s.Ack(tt.give); err != nil {
					t.Fatal(err)
				}
			}
			if got := s.Pending(); got != total-tt.give {
				t.Errorf("Pending = %d, want %d", got, total-tt.give)
			}
			if tt.give > total/2 && len(segFiles(t, dir)) >= before {
				t.Errorf("no segment deleted after acknowledging %d of %d (%d files)", tt.give, total, before)
			}
			s.Close()

			s, _ = open(t, dir, opt)
			checkRecords(t, drain(t, s), span(tt.give+1, total))
			if got := s.Pending(); got != total-tt.give {
				t.Errorf("after reopen Pending = %d, want %d", got, total-tt.give)
			}
		})
	}
}

// TestRedelivery: records taken but not acknowledged (the database did not
// confirm them, or the agent died first) come out again, after Rewind and
// after a reopen; Replay resumes at the record its callback failed on.
func TestRedelivery(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{SegmentBytes: 512})
	appendN(t, s, 1, 40)
	checkRecords(t, drain(t, s)[:10], span(1, 10))
	if err := s.Ack(4); err != nil {
		t.Fatal(err)
	}
	if err := s.Rewind(); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, drain(t, s), span(5, 40))

	boom := errors.New("database went away")
	var got []Record
	err := s.Replay(context.Background(), func(r Record) error {
		if r.Seq == 23 {
			return boom
		}
		got = append(got, r)
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Replay = %v, want %v", err, boom)
	}
	checkRecords(t, got, span(5, 22))
	s.Close()

	s, _ = open(t, dir, Options{SegmentBytes: 512})
	checkRecords(t, replayAll(t, s), span(23, 40))
}

// TestAckRules: acknowledging is cumulative, idempotent and bounded by
// what was appended; acknowledging records not read yet skips them.
func TestAckRules(t *testing.T) {
	dir := t.TempDir()
	s, rep := open(t, dir, Options{SegmentBytes: 512})
	appendN(t, s, 1, 30)
	if err := s.Ack(31); err == nil {
		t.Error("Ack beyond the last record succeeded")
	}
	if err := s.Ack(12); err != nil { // none read yet
		t.Fatal(err)
	}
	if err := s.Ack(3); err != nil {
		t.Errorf("Ack below an earlier one: %v", err)
	}
	checkRecords(t, drain(t, s), span(13, 30))
	if got := s.Pending(); got != 18 {
		t.Errorf("Pending = %d, want 18", got)
	}
	// Acknowledged records whose segments are gone are not "missing".
	if len(rep.all()) != 0 || s.Lost() != 0 {
		t.Errorf("reports %v, lost %d", rep.all(), s.Lost())
	}

	// An agent that writes to the database itself and uses the spool as
	// a write-ahead log acknowledges without ever reading.
	for i := uint64(31); i <= 200; i++ {
		appendN(t, s, i, 1)
		if err := s.Ack(i); err != nil {
			t.Fatal(err)
		}
	}
	if len(segFiles(t, dir)) > 2 || s.Pending() != 0 || s.Age() != 0 {
		t.Errorf("%d segments, pending %d, age %v after acknowledging everything", len(segFiles(t, dir)), s.Pending(), s.Age())
	}
	appendN(t, s, 201, 2)
	checkRecords(t, drain(t, s), span(201, 202))
	if len(rep.all()) != 0 || s.Lost() != 0 {
		t.Errorf("reports %v, lost %d", rep.all(), s.Lost())
	}
}

// TestTornTail is the crash property: cut the newest segment at every byte
// offset (a crash in the middle of an append), optionally followed by junk
// (what a power cut can leave). Every record that ended before the cut
// survives, nothing after it comes back, the damage is reported unless the
// cut fell on a frame boundary, and appending afterwards continues the
// sequence.
func TestTornTail(t *testing.T) {
	src := t.TempDir()
	s, _ := open(t, src, Options{})
	const n = 8
	appendN(t, s, 1, n)
	s.Close()
	path := segFiles(t, src)[0]
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	offs, _ := frameOffsets(t, path)
	ends := append(slices.Clone(offs[1:]), int64(len(whole))) // ends[i]: end of record i+1
	rng := rand.New(rand.NewPCG(1, 2))

	dir := t.TempDir()
	for _, junk := range []bool{false, true} {
		for cut := int64(0); cut <= int64(len(whole)); cut++ {
			b := slices.Clone(whole[:cut])
			if junk {
				extra := make([]byte, 1+rng.IntN(40))
				for i := range extra {
					extra[i] = byte(rng.IntN(256))
				}
				if cut < int64(len(whole)) && extra[0] == whole[cut] {
					extra[0]++ // else the junk could complete the cut record
				}
				b = append(b, extra...)
			}
			for _, name := range []string{filepath.Base(path), cursorName, segName(n + 1)} {
				os.Remove(filepath.Join(dir, name))
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(path)), b, 0o640); err != nil {
				t.Fatal(err)
			}
			var survive uint64
			for survive < n && ends[survive] <= cut {
				survive++
			}
			clean := !junk && (cut == headerLen || slices.Contains(ends, cut))

			s, rep := open(t, dir, Options{})
			rs := drain(t, s)
			if got := seqs(rs); !slices.Equal(got, span(1, survive)) {
				t.Fatalf("cut %d junk %v: got %s, want %s", cut, junk, summary(got), summary(span(1, survive)))
			}
			checkRecords(t, rs, span(1, survive))
			if got := len(rep.all()); clean && got != 0 || !clean && got != 1 {
				t.Fatalf("cut %d junk %v: %d reports %v, want %d", cut, junk, got, rep.all(), map[bool]int{true: 0, false: 1}[clean])
			}
			if s.Lost() != 0 {
				t.Fatalf("cut %d: %d records counted lost; a torn append loses none that was acknowledged", cut, s.Lost())
			}
			seq, err := s.Append(payload(survive + 1))
			if err != nil || seq != survive+1 {
				t.Fatalf("cut %d: Append after repair = %d, %v; want %d", cut, seq, err, survive+1)
			}
			s.Close()
			s, rep = open(t, dir, Options{})
			checkRecords(t, drain(t, s), span(1, survive+1))
			if len(rep.all()) != 0 {
				t.Fatalf("cut %d: repaired spool still reports %v", cut, rep.all())
			}
			s.Close()
		}
	}
}

// TestCorruption damages a spool of five segments in various ways. The
// damage is reported with its file and offset; every record not in the
// damaged bytes, in the same segment and in later ones, is still replayed;
// the loss is counted exactly.
func TestCorruption(t *testing.T) {
	type layout struct {
		files []string
		offs  [][]int64 // frame offsets per file
		seqs  [][]uint64
	}
	tests := []struct {
		name string
		// damage returns the damaged file (index into files), the
		// offset the report must name, and the seqs lost.
		give func(t *testing.T, l layout) (file int, off int64, lost []uint64)
	}{
		{"payload bit", func(t *testing.T, l layout) (int, int64, []uint64) {
			flipBit(t, l.files[2], l.offs[2][3]+frameHeaderLen+2, 5)
			return 2, l.offs[2][3], []uint64{l.seqs[2][3]}
		}},
		{"length bit", func(t *testing.T, l layout) (int, int64, []uint64) {
			flipBit(t, l.files[2], l.offs[2][1]+1, 3) // length +2048: runs past the end
			return 2, l.offs[2][1], []uint64{l.seqs[2][1]}
		}},
		{"length shrinks", func(t *testing.T, l layout) (int, int64, []uint64) {
			flipBit(t, l.files[2], l.offs[2][2], 0) // length odd/even: lands inside the payload
			return 2, l.offs[2][2], []uint64{l.seqs[2][2]}
		}},
		{"seq bit", func(t *testing.T, l layout) (int, int64, []uint64) {
			flipBit(t, l.files[1], l.offs[1][0]+8, 1)
			return 1, l.offs[1][0], []uint64{l.seqs[1][0]}
		}},
		{"two records zeroed", func(t *testing.T, l layout) (int, int64, []uint64) {
			b, _ := os.ReadFile(l.files[3])
			clear(b[l.offs[3][1]:l.offs[3][3]])
			os.WriteFile(l.files[3], b, 0o640)
			return 3, l.offs[3][1], []uint64{l.seqs[3][1], l.seqs[3][2]}
		}},
		{"header bit", func(t *testing.T, l layout) (int, int64, []uint64) {
			flipBit(t, l.files[2], 3, 0)
			return 2, 0, nil // the frames are intact and still delivered
		}},
		{"header zeroed", func(t *testing.T, l layout) (int, int64, []uint64) {
			b, _ := os.ReadFile(l.files[0])
			clear(b[:headerLen])
			os.WriteFile(l.files[0], b, 0o640)
			return 0, 0, nil
		}},
		{"whole segment garbage", func(t *testing.T, l layout) (int, int64, []uint64) {
			b, _ := os.ReadFile(l.files[2])
			rng := rand.New(rand.NewPCG(3, 4))
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			os.WriteFile(l.files[2], b, 0o640)
			return 2, 0, l.seqs[2]
		}},
		{"sealed segment cut mid-frame", func(t *testing.T, l layout) (int, int64, []uint64) {
			k := len(l.offs[1]) - 2
			os.Truncate(l.files[1], l.offs[1][k]+5)
			return 1, l.offs[1][k], l.seqs[1][k:]
		}},
		{"sealed segment cut at a frame boundary", func(t *testing.T, l layout) (int, int64, []uint64) {
			k := len(l.offs[1]) - 2
			os.Truncate(l.files[1], l.offs[1][k])
			return 1, l.offs[1][k], l.seqs[1][k:]
		}},
		{"segment file deleted", func(t *testing.T, l layout) (int, int64, []uint64) {
			os.Remove(l.files[2])
			info, _ := os.Stat(l.files[1])
			return 1, info.Size(), l.seqs[2] // noticed at the end of the one before
		}},
		{"newest segment: middle bit", func(t *testing.T, l layout) (int, int64, []uint64) {
			last := len(l.files) - 1
			flipBit(t, l.files[last], l.offs[last][1]+frameHeaderLen, 0)
			return last, l.offs[last][1], []uint64{l.seqs[last][1]}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			opt := Options{SegmentBytes: 600}
			s, _ := open(t, dir, opt)
			appendN(t, s, 1, 40)
			s.Close()
			var l layout
			l.files = segFiles(t, dir)
			if len(l.files) < 5 {
				t.Fatalf("want at least 5 segments, got %d", len(l.files))
			}
			for _, f := range l.files {
				o, q := frameOffsets(t, f)
				if len(o) < 4 {
					t.Fatalf("%s holds %d records; the test needs 4", f, len(o))
				}
				l.offs, l.seqs = append(l.offs, o), append(l.seqs, q)
			}
			file, off, lost := tt.give(t, l)

			s, rep := open(t, dir, opt)
			var want []uint64
			for _, q := range span(1, 40) {
				if !slices.Contains(lost, q) {
					want = append(want, q)
				}
			}
			checkRecords(t, replayAll(t, s), want)
			got := rep.all()
			if len(got) == 0 {
				t.Fatal("damage not reported")
			}
			if got[0].File != l.files[file] || got[0].Offset != off {
				t.Errorf("first report %v; want file %s offset %d", got[0], filepath.Base(l.files[file]), off)
			}
			if s.Lost() != uint64(len(lost)) || s.Corrupt() != uint64(len(got)) {
				t.Errorf("Lost %d Corrupt %d; want %d lost, %d reports", s.Lost(), s.Corrupt(), len(lost), len(got))
			}
			if s.Pending() != 0 || s.Age() != 0 {
				t.Errorf("after replay: pending %d, age %v", s.Pending(), s.Age())
			}
			s.Close()
			// Reported once: the damage lies behind the acknowledged position now.
			s, rep = open(t, dir, opt)
			if rs := drain(t, s); len(rs) != 0 || len(rep.all()) != 0 {
				t.Errorf("after reopen: %d records, reports %v", len(rs), rep.all())
			}
		})
	}
}

// TestCorruptCursor: a cursor file with no valid slot is reported and the
// whole spool is replayed (duplicates the database absorbs), never lost.
func TestCorruptCursor(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{SegmentBytes: 1 << 10})
	appendN(t, s, 1, 30)
	drain(t, s)
	if err := s.Ack(10); err != nil {
		t.Fatal(err)
	}
	s.Close()
	os.WriteFile(filepath.Join(dir, cursorName), []byte("garbage"), 0o640)
	s, rep := open(t, dir, Options{SegmentBytes: 1 << 10})
	rs := drain(t, s)
	if len(rep.all()) != 1 || !strings.Contains(rep.all()[0].File, cursorName) {
		t.Errorf("reports %v, want one naming the cursor", rep.all())
	}
	// Segments wholly acknowledged were deleted; the rest comes back.
	if len(rs) == 0 || rs[len(rs)-1].Seq != 30 || rs[0].Seq > 11 {
		t.Errorf("replayed %s, want everything still on disk through 30", summary(seqs(rs)))
	}
	checkRecords(t, rs, span(rs[0].Seq, 30))
}

// TestConcurrent: one goroutine appends while another replays and
// acknowledges; every record arrives once, in order. Run with -race.
func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	s, rep := open(t, dir, Options{SegmentBytes: 4 << 10})
	const total = 3000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(5, 6))
		for i := uint64(1); i <= total; {
			n := min(uint64(1+rng.IntN(8)), total-i+1)
			var batch [][]byte
			for j := i; j < i+n; j++ {
				batch = append(batch, payload(j))
			}
			if _, err := s.AppendBatch(batch); err != nil {
				t.Errorf("AppendBatch: %v", err)
				return
			}
			i += n
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got []Record
	for len(got) < total {
		r, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("Next after %d records: %v", len(got), err)
		}
		got = append(got, r)
		if r.Seq%7 == 0 {
			if err := s.Ack(r.Seq); err != nil {
				t.Fatal(err)
			}
		}
		_ = s.Bytes() + int64(s.Pending()) + int64(s.Age())
	}
	wg.Wait()
	checkRecords(t, got, span(1, total))
	if err := s.Ack(total); err != nil {
		t.Fatal(err)
	}
	if len(rep.all()) != 0 || s.Pending() != 0 {
		t.Errorf("reports %v, pending %d", rep.all(), s.Pending())
	}
}

// TestNextWaits: Next blocks until a record is appended, and returns when
// its context ends or the spool closes.
func TestNextWaits(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	got := make(chan Record)
	go func() {
		r, err := s.Next(context.Background())
		if err != nil {
			t.Errorf("Next: %v", err)
		}
		got <- r
	}()
	appendN(t, s, 1, 1)
	if r := <-got; r.Seq != 1 {
		t.Errorf("Next returned seq %d", r.Seq)
	}

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { _, err := s.Next(ctx); errc <- err }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Next after cancel = %v", err)
	}

	go func() { _, err := s.Next(context.Background()); errc <- err }()
	s.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("Next after Close = %v", err)
	}
	if _, err := s.Append([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v", err)
	}
}

// TestLock: a second opener of the same directory is refused until the
// first closes.
func TestLock(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	s.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s.Close()
}

// TestFull: the spool refuses, with ErrFull and without writing anything,
// an append that would pass MaxBytes; acknowledging frees the space.
func TestFull(t *testing.T) {
	const limit = 8 << 10
	dir := t.TempDir()
	s, _ := open(t, dir, Options{MaxBytes: limit, SegmentBytes: 2 << 10})
	rec := make([]byte, 200)
	fill := func() uint64 {
		var n uint64
		for ; n < 1000; n++ {
			_, err := s.Append(rec)
			if errors.Is(err, ErrFull) {
				return n
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Bytes() > limit {
				t.Fatalf("Bytes %d over the limit %d", s.Bytes(), limit)
			}
		}
		t.Fatal("never full")
		return 0
	}
	// Segments of 32 + 9*224 bytes = 2048: four fill the limit exactly.
	n := fill()
	if n != 36 {
		t.Errorf("%d records fit, want 36", n)
	}
	var onDisk int64
	for _, f := range segFiles(t, dir) {
		info, _ := os.Stat(f)
		onDisk += info.Size()
	}
	if onDisk != s.Bytes() || s.Pending() != n {
		t.Errorf("Bytes %d, files hold %d; Pending %d, want %d", s.Bytes(), onDisk, s.Pending(), n)
	}
	if rs := drain(t, s); len(rs) != int(n) || rs[len(rs)-1].Seq != n {
		t.Fatalf("replayed %s, want 1-%d: a refused record must not appear", summary(seqs(rs)), n)
	}
	if err := s.Ack(n); err != nil {
		t.Fatal(err)
	}
	if got := fill(); got != n {
		t.Errorf("after acknowledging everything %d records fit, want %d again", got, n)
	}
	if _, err := s.Append(make([]byte, DefaultMaxRecord+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized record: %v, want ErrTooLarge", err)
	}
}

// TestAgeAndRotation: Age follows the oldest unacknowledged record, across
// a reopen too, and the active segment is closed once old enough.
func TestAgeAndRotation(t *testing.T) {
	clock := newClock()
	dir := t.TempDir()
	opt := Options{Now: clock.Now, SegmentAge: time.Minute}
	s, err := Open(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if s.Age() != 0 {
		t.Errorf("empty spool Age = %v", s.Age())
	}
	appendN(t, s, 1, 1)
	clock.Add(10 * time.Second)
	appendN(t, s, 2, 1)
	clock.Add(50 * time.Second)
	appendN(t, s, 3, 1) // 60 s after the segment's first record: new segment
	clock.Add(5 * time.Second)
	if got := len(segFiles(t, dir)); got != 2 {
		t.Errorf("%d segments, want 2 (rotation by age)", got)
	}
	tests := []struct {
		name string
		ack  uint64
		want time.Duration
	}{
		{"nothing acknowledged", 0, 65 * time.Second},
		{"first acknowledged", 1, 55 * time.Second},
		{"two acknowledged", 2, 5 * time.Second},
		{"all acknowledged", 3, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.ack > 0 {
				drain(t, s)
				if err := s.Ack(tt.ack); err != nil {
					t.Fatal(err)
				}
			}
			if got := s.Age(); got != tt.want {
				t.Errorf("Age = %v, want %v", got, tt.want)
			}
			s.Close()
			if s, err = Open(dir, opt); err != nil {
				t.Fatal(err)
			}
			if got := s.Age(); got != tt.want {
				t.Errorf("after reopen Age = %v, want %v", got, tt.want)
			}
		})
	}
	if got := len(segFiles(t, dir)); got != 1 {
		t.Errorf("%d segments after acknowledging all, want 1 (the active one)", got)
	}
}

// TestIncompleteSegment: a segment whose creation was cut short (no full
// header, or zeros where the power cut left them) is removed and reported,
// and the sequence goes on from the segment before.
func TestIncompleteSegment(t *testing.T) {
	tests := []struct {
		name string
		give []byte
	}{
		{"empty", nil},
		{"half a header", encodeHeader(11)[:10]},
		{"zeros", make([]byte, 300)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := open(t, dir, Options{})
			appendN(t, s, 1, 10)
			s.Close()
			os.WriteFile(filepath.Join(dir, segName(11)), tt.give, 0o640)
			s, rep := open(t, dir, Options{})
			if len(rep.all()) != 1 {
				t.Errorf("reports %v, want 1", rep.all())
			}
			appendN(t, s, 11, 2)
			checkRecords(t, drain(t, s), span(1, 12))
		})
	}
}

// TestWriteAndSync: records Written without a sync are replayed at once,
// across segment rotations, and are all there after Close and a reopen;
// Sync reports nothing to do or does it, and fails once closed.
func TestWriteAndSync(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync with nothing written: %v", err)
	}
	var seq uint64 = 1
	for range 40 {
		first, err := s.Write([][]byte{payload(seq), payload(seq + 1)})
		if err != nil || first != seq {
			t.Fatalf("Write: %d, %v; want seq %d", first, err, seq)
		}
		seq += 2
		if !s.dirty {
			t.Fatal("a Write left nothing to sync")
		}
		if seq%10 == 1 {
			if err := s.Sync(); err != nil || s.dirty {
				t.Fatalf("Sync: %v (dirty %v)", err, s.dirty)
			}
		}
	}
	if n := len(segFiles(t, dir)); n < 3 {
		t.Fatalf("%d segments, want rotations", n)
	}
	// The replayer sees Written records before any Sync.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for want := uint64(1); want < seq; want++ {
		r, err := s.Next(ctx)
		if err != nil || r.Seq != want || !bytes.Equal(r.Data, payload(want)) {
			t.Fatalf("Next: %d, %v; want %d", r.Seq, err, want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close: %v, want ErrClosed", err)
	}
	s, rep := open(t, dir, Options{SegmentBytes: 1 << 10})
	if rs := drain(t, s); len(rs) != int(seq-1) || len(rep.all()) != 0 {
		t.Fatalf("after a reopen: %s, reports %v; want 1-%d", summary(seqs(rs)), rep.all(), seq-1)
	}
}
