package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"
	"time"
)

// On-disk format, version 1. All integers are little-endian.
//
// A segment file seg-<first seq, 20 digits>.spool starts with a header:
//
//	0  [8]byte  magic "cutspool"
//	8  uint32   version (1)
//	12 uint32   reserved, zero
//	16 uint64   first seq: no record in the file has a lower one
//	24 uint32   reserved, zero
//	28 uint32   CRC-32C of bytes 0..28
//
// followed by frames, one per record:
//
//	0  uint32   payload length n
//	4  uint32   CRC-32C of bytes 0..4 and 8..24+n (everything but itself)
//	8  uint64   seq: one more than the record before it, across segments
//	16 int64    append time, Unix nanoseconds
//	24 [n]byte  payload
//
// The sequence number is what makes loss visible: a reader that sees seq 7
// follow seq 4, or a segment named 20 follow one whose last record is 17,
// knows exactly how many records went missing, even when the damage left no
// garbage behind (a file cut at a frame boundary).
const (
	segMagic       = "cutspool"
	segVersion     = 1
	headerLen      = 32
	frameHeaderLen = 24
	segPrefix      = "seg-"
	segSuffix      = ".spool"
	// maxSeq bounds every sequence number read from disk, so arithmetic on
	// them (seq+1, gap sizes) cannot overflow whatever garbage says.
	maxSeq = 1 << 62
	// maxFrameLen is the format's hard limit on one payload (the length
	// field could say 4 GiB).
	maxFrameLen = 1 << 30
)

// castagnoli is read-only after initialisation (crc32 caches the table).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var le = binary.LittleEndian

// Reasons a frame or header is rejected. They end up in CorruptError.Reason.
var (
	errTruncated  = errors.New("incomplete record (file ends inside it)")
	errChecksum   = errors.New("bad checksum")
	errFrameSeq   = errors.New("sequence number out of order")
	errBadHeader  = errors.New("bad segment header")
	errShortSeg   = errors.New("segment shorter than its header")
	errHeaderSeq  = errors.New("segment header does not match the file name")
	errBadVersion = errors.New("unsupported segment version")
)

// segName is the file name of the segment whose first record is seq.
// Zero-padding makes lexical order equal numeric order in a directory
// listing, which is what an operator looking at it expects.
func segName(first uint64) string {
	return fmt.Sprintf("%s%020d%s", segPrefix, first, segSuffix)
}

// parseSegName returns the first seq encoded in a segment file name, and
// false for any other file.
func parseSegName(name string) (uint64, bool) {
	if !strings.HasPrefix(name, segPrefix) || !strings.HasSuffix(name, segSuffix) {
		return 0, false
	}
	digits := strings.TrimSuffix(strings.TrimPrefix(name, segPrefix), segSuffix)
	if len(digits) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || n == 0 || n >= maxSeq {
		return 0, false
	}
	return n, true
}

func encodeHeader(first uint64) []byte {
	b := make([]byte, headerLen)
	copy(b, segMagic)
	le.PutUint32(b[8:], segVersion)
	le.PutUint64(b[16:], first)
	le.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
	return b
}

// checkHeader validates a segment header against the first seq its file
// name promises.
func checkHeader(b []byte, first uint64) error {
	if len(b) < headerLen {
		return errShortSeg
	}
	if string(b[:8]) != segMagic || le.Uint32(b[28:]) != crc32.Checksum(b[:28], castagnoli) {
		return errBadHeader
	}
	if v := le.Uint32(b[8:]); v != segVersion {
		return fmt.Errorf("%w %d", errBadVersion, v)
	}
	if got := le.Uint64(b[16:]); got != first {
		return fmt.Errorf("%w (header says %d)", errHeaderSeq, got)
	}
	return nil
}

// appendFrame appends the frame of one record to dst.
func appendFrame(dst []byte, seq uint64, nanos int64, payload []byte) []byte {
	start := len(dst)
	dst = le.AppendUint32(dst, uint32(len(payload)))
	dst = le.AppendUint32(dst, 0) // CRC, filled in below
	dst = le.AppendUint64(dst, seq)
	dst = le.AppendUint64(dst, uint64(nanos))
	dst = append(dst, payload...)
	f := dst[start:]
	le.PutUint32(f[4:], frameCRC(f[:frameHeaderLen], payload))
	return dst
}

func frameCRC(head, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, head[0:4])
	c = crc32.Update(c, castagnoli, head[8:frameHeaderLen])
	return crc32.Update(c, castagnoli, payload)
}

// frameLen is the size on disk of a record with an n-byte payload.
func frameLen(n int) int64 { return frameHeaderLen + int64(n) }

// readFrame decodes the frame at off, which must lie entirely before end.
// Data errors (truncation, checksum) are returned as such; anything else
// is an I/O error the caller must not mistake for corruption.
func readFrame(r io.ReaderAt, off, end int64) (Record, int64, error) {
	if end-off < frameHeaderLen {
		return Record{}, 0, errTruncated
	}
	var head [frameHeaderLen]byte
	if err := readFull(r, head[:], off); err != nil {
		return Record{}, 0, err
	}
	n := int64(le.Uint32(head[0:]))
	if n > maxFrameLen || n > end-off-frameHeaderLen {
		// Also what a corrupted length field looks like; either way no
		// valid frame starts here.
		return Record{}, 0, errTruncated
	}
	payload := make([]byte, n)
	if err := readFull(r, payload, off+frameHeaderLen); err != nil {
		return Record{}, 0, err
	}
	if le.Uint32(head[4:]) != frameCRC(head[:], payload) {
		return Record{}, 0, errChecksum
	}
	seq := le.Uint64(head[8:])
	if seq == 0 || seq >= maxSeq {
		return Record{}, 0, errFrameSeq
	}
	return Record{Seq: seq, Time: time.Unix(0, int64(le.Uint64(head[16:]))), Data: payload}, off + frameHeaderLen + n, nil
}

// readFull reads len(b) bytes at off. A file that turns out shorter than
// its recorded size (shrunk under us) reads as truncated data, not as an
// I/O failure.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return errTruncated
	}
	return err
}

// isDataErr says whether err describes bad bytes (to be reported and
// skipped) rather than a failing disk (to be returned).
func isDataErr(err error) bool {
	return errors.Is(err, errTruncated) || errors.Is(err, errChecksum) || errors.Is(err, errFrameSeq)
}

// resync looks for the first valid frame in [from, end) whose seq lies in
// [lo, hi), the way a reader finds its footing again after garbage. The
// sequence window is a cheap filter that keeps the checksum from being
// computed at nearly every byte, and keeps a stale or misplaced frame from
// being mistaken for the next one. It returns -1 when there is none.
func resync(r io.ReaderAt, from, end int64, lo, hi uint64) (int64, Record, int64, error) {
	const window = 64 << 10
	buf := make([]byte, window+frameHeaderLen)
	for base := from; base+frameHeaderLen <= end; base += window {
		n := min(int64(len(buf)), end-base)
		if err := readFull(r, buf[:n], base); err != nil {
			if isDataErr(err) {
				return -1, Record{}, 0, nil
			}
			return -1, Record{}, 0, err
		}
		for i := int64(0); i < window && i+frameHeaderLen <= n; i++ {
			off := base + i
			h := buf[i:]
			seq := le.Uint64(h[8:])
			if seq < lo || seq >= hi || int64(le.Uint32(h[0:])) > end-off-frameHeaderLen {
				continue
			}
			rec, next, err := readFrame(r, off, end)
			if err == nil {
				return off, rec, next, nil
			}
			if !isDataErr(err) {
				return -1, Record{}, 0, err
			}
		}
	}
	return -1, Record{}, 0, nil
}
