package spool

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// The cursor file remembers how far the database has acknowledged. It has
// two 64-byte slots, 512 bytes apart so they never share a disk sector:
//
//	0  [8]byte  magic "cutackv1"
//	8  uint64   generation, +1 per write
//	16 uint64   acknowledged seq: every record up to it is in the database
//	24 uint64   hint: first seq (name) of the segment holding the next record
//	32 int64    hint: offset of the next record in that segment
//	40 uint32   CRC-32C of bytes 0..40
//
// Writes alternate between the slots and the reader takes the valid slot
// with the higher generation, so a write torn by a crash leaves the previous
// acknowledgement intact: no rename, no directory fsync, one fdatasync per
// Ack. The hint only saves a scan; a record at or below the acknowledged seq
// is skipped wherever reading starts.
const (
	cursorName  = "cursor"
	cursorMagic = "cutackv1"
	slotLen     = 44
	slotStride  = 512
)

// ackPos is an acknowledgement and where reading resumes after it.
type ackPos struct {
	seq uint64
	seg uint64 // first seq of the segment holding the next record
	off int64  // offset of the next record in it
}

type cursor struct {
	f   *os.File
	gen uint64
}

func encodeSlot(gen uint64, p ackPos) []byte {
	b := make([]byte, slotLen)
	copy(b, cursorMagic)
	le.PutUint64(b[8:], gen)
	le.PutUint64(b[16:], p.seq)
	le.PutUint64(b[24:], p.seg)
	le.PutUint64(b[32:], uint64(p.off))
	le.PutUint32(b[40:], crc32.Checksum(b[:40], castagnoli))
	return b
}

func decodeSlot(b []byte) (uint64, ackPos, bool) {
	if len(b) < slotLen || string(b[:8]) != cursorMagic || le.Uint32(b[40:]) != crc32.Checksum(b[:40], castagnoli) {
		return 0, ackPos{}, false
	}
	p := ackPos{seq: le.Uint64(b[16:]), seg: le.Uint64(b[24:]), off: int64(le.Uint64(b[32:]))}
	if p.seq >= maxSeq || p.seg >= maxSeq || p.off < 0 {
		return 0, ackPos{}, false
	}
	return le.Uint64(b[8:]), p, true
}

// openCursor opens dir's cursor file, creating it (atomically, through a
// rename) when missing. A cursor that exists but holds no valid slot is
// returned with errBadCursor and a zero position: everything still on disk
// will be replayed, which the database absorbs as duplicates.
func openCursor(dir string) (*cursor, ackPos, error) {
	path := filepath.Join(dir, cursorName)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createCursor(dir); err != nil {
			return nil, ackPos{}, err
		}
		f, err = os.OpenFile(path, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, ackPos{}, fmt.Errorf("open cursor: %w", err)
	}
	buf := make([]byte, slotStride+slotLen)
	n, err := f.ReadAt(buf, 0)
	if err != nil && n == 0 && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, ackPos{}, fmt.Errorf("read cursor: %w", err)
	}
	buf = buf[:n]
	c := &cursor{f: f}
	var best ackPos
	found := false
	for i := 0; i < 2; i++ {
		lo := i * slotStride
		if lo >= len(buf) {
			break
		}
		gen, p, ok := decodeSlot(buf[lo:min(lo+slotLen, len(buf))])
		if ok && (!found || gen > c.gen) {
			c.gen, best, found = gen, p, true
		}
	}
	if !found {
		return c, ackPos{}, errBadCursor
	}
	return c, best, nil
}

var errBadCursor = errors.New("cursor file holds no valid acknowledgement; replaying everything on disk")

// createCursor writes a fresh cursor (generation 0, nothing acknowledged)
// so that from then on one slot is always valid.
func createCursor(dir string) error {
	tmp := filepath.Join(dir, cursorName+".tmp")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("create cursor: %w", err)
	}
	b := make([]byte, slotStride+slotLen)
	copy(b, encodeSlot(0, ackPos{}))
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write cursor: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync cursor: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close cursor: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, cursorName)); err != nil {
		return fmt.Errorf("install cursor: %w", err)
	}
	return syncDir(dir)
}

// write persists p in the slot not holding the current generation.
func (c *cursor) write(p ackPos) error {
	gen := c.gen + 1
	if _, err := c.f.WriteAt(encodeSlot(gen, p), int64(gen%2)*slotStride); err != nil {
		return fmt.Errorf("write cursor: %w", err)
	}
	if err := fdatasync(c.f); err != nil {
		return fmt.Errorf("sync cursor: %w", err)
	}
	c.gen = gen
	return nil
}

func (c *cursor) close() error { return c.f.Close() }

// syncDir makes a directory's entries (a created, renamed or removed file)
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
