package spool

import (
	"bytes"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseSegName(t *testing.T) {
	tests := []struct {
		name   string
		give   string
		want   uint64
		wantOK bool
	}{
		{"round trip", segName(42), 42, true},
		{"largest allowed", segName(maxSeq - 1), maxSeq - 1, true},
		{"zero is never a seq", segName(0), 0, false},
		{"beyond maxSeq", segName(maxSeq), 0, false},
		{"short digits", "seg-42.spool", 0, false},
		{"letters", "seg-0000000000000000004x.spool", 0, false},
		{"sign", "seg-+0000000000000000042.spool", 0, false},
		{"other suffix", "seg-00000000000000000042.tmp", 0, false},
		{"cursor", "cursor", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseSegName(tt.give)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("parseSegName(%q) = %d, %v; want %d, %v", tt.give, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestCheckHeader(t *testing.T) {
	good := encodeHeader(7)
	with := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	tests := []struct {
		name  string
		give  []byte
		first uint64
		want  error
	}{
		{"good", good, 7, nil},
		{"other name", good, 8, errHeaderSeq},
		{"short", good[:20], 7, errShortSeg},
		{"magic", with(func(b []byte) { b[0] = 'C' }), 7, errBadHeader},
		{"flipped first seq", with(func(b []byte) { b[16] ^= 4 }), 7, errBadHeader},
		{"zeros", make([]byte, headerLen), 7, errBadHeader},
		{"future version", func() []byte {
			b := bytes.Clone(good)
			le.PutUint32(b[8:], 2)
			le.PutUint32(b[28:], 0)
			le.PutUint32(b[28:], crc(b[:28]))
			return b
		}(), 7, errBadVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkHeader(tt.give, tt.first); !errors.Is(err, tt.want) {
				t.Errorf("checkHeader = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestReadFrame(t *testing.T) {
	when := time.Date(2014, 12, 22, 16, 0, 0, 0, time.UTC)
	frame := appendFrame(nil, 9, when.UnixNano(), []byte("hello"))
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(frame)) }
	tests := []struct {
		name    string
		give    []byte
		want    error
		wantSeq uint64
	}{
		{"good", frame, nil, 9},
		{"empty payload", appendFrame(nil, 3, 1, nil), nil, 3},
		{"cut in header", frame[:10], errTruncated, 0},
		{"cut in payload", frame[:len(frame)-1], errTruncated, 0},
		{"nothing", nil, errTruncated, 0},
		{"flipped payload bit", mod(func(b []byte) []byte { b[25] ^= 1; return b }), errChecksum, 0},
		{"flipped seq bit", mod(func(b []byte) []byte { b[8] ^= 1; return b }), errChecksum, 0},
		{"flipped time bit", mod(func(b []byte) []byte { b[20] ^= 1; return b }), errChecksum, 0},
		{"flipped crc bit", mod(func(b []byte) []byte { b[4] ^= 1; return b }), errChecksum, 0},
		{"shorter length", mod(func(b []byte) []byte { b[0] = 4; return b }), errChecksum, 0},
		{"longer length", mod(func(b []byte) []byte { b[0] = 6; return b }), errTruncated, 0},
		{"huge length", mod(func(b []byte) []byte { b[3] = 0xff; return b }), errTruncated, 0},
		// What a power cut leaves when a file's size reached the disk
		// before its data: zeros must never pass for a record.
		{"zeros", make([]byte, 64), errChecksum, 0},
		{"seq zero", appendFrame(nil, 0, 1, []byte("x")), errFrameSeq, 0},
		{"seq beyond maxSeq", appendFrame(nil, maxSeq, 1, []byte("x")), errFrameSeq, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec, next, err := readFrame(bytes.NewReader(tt.give), 0, int64(len(tt.give)))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if err != nil {
				return
			}
			if rec.Seq != tt.wantSeq || next != int64(len(tt.give)) {
				t.Errorf("seq %d next %d; want %d, %d", rec.Seq, next, tt.wantSeq, len(tt.give))
			}
		})
	}
	rec, _, err := readFrame(bytes.NewReader(frame), 0, int64(len(frame)))
	if err != nil || string(rec.Data) != "hello" || !rec.Time.Equal(when) {
		t.Errorf("decoded %q at %v (%v), want \"hello\" at %v", rec.Data, rec.Time, err, when)
	}
}

func TestResync(t *testing.T) {
	var seg []byte
	seg = appendFrame(seg, 10, 1, []byte("ten"))
	at11 := int64(len(seg))
	seg = appendFrame(seg, 11, 1, []byte("eleven"))
	at12 := int64(len(seg))
	seg = appendFrame(seg, 12, 1, []byte("twelve"))
	tests := []struct {
		name   string
		from   int64
		lo, hi uint64
		want   int64
	}{
		{"from the start", 0, 10, 20, 0},
		{"inside the first frame", 1, 10, 20, at11},
		{"window excludes 11", 1, 12, 20, at12},
		{"window excludes everything", 1, 13, 20, -1},
		{"upper bound", 1, 10, 11, -1},
		{"past the end", int64(len(seg)), 10, 20, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, _, err := resync(bytes.NewReader(seg), tt.from, int64(len(seg)), tt.lo, tt.hi)
			if err != nil || got != tt.want {
				t.Errorf("resync = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

// TestCursorTornWrite: a torn write of the newest slot must leave the
// previous acknowledgement readable, and a cursor with no valid slot must
// say so (and mean "replay everything").
func TestCursorTornWrite(t *testing.T) {
	tests := []struct {
		name    string
		writes  []uint64 // acknowledged seqs written in order
		damage  func(b []byte)
		want    uint64
		wantErr error
	}{
		{"fresh", nil, nil, 0, nil},
		{"two writes", []uint64{5, 9}, nil, 9, nil},
		{"newest slot torn", []uint64{5, 9}, func(b []byte) { b[0*slotStride+20] ^= 1 }, 5, nil},
		{"older slot torn", []uint64{5, 9}, func(b []byte) { b[1*slotStride+20] ^= 1 }, 9, nil},
		{"first write torn", []uint64{5}, func(b []byte) { b[1*slotStride+3] = 0 }, 0, nil},
		{"both slots bad", []uint64{5, 9}, func(b []byte) { b[3] = 0; b[slotStride+3] = 0 }, 0, errBadCursor},
		{"zeroed", []uint64{5, 9}, func(b []byte) { clear(b) }, 0, errBadCursor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c, _, err := openCursor(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, seq := range tt.writes {
				if err := c.write(ackPos{seq: seq, seg: 1, off: headerLen}); err != nil {
					t.Fatal(err)
				}
			}
			c.close()
			path := filepath.Join(dir, cursorName)
			if tt.damage != nil {
				b, _ := os.ReadFile(path)
				tt.damage(b)
				os.WriteFile(path, b, 0o640)
			}
			c, pos, err := openCursor(dir)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("openCursor err = %v, want %v", err, tt.wantErr)
			}
			c.close()
			if pos.seq != tt.want {
				t.Errorf("acknowledged %d, want %d", pos.seq, tt.want)
			}
		})
	}
}

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
