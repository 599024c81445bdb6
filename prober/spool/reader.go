package spool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"
)

// reader is the replayer's position. It is guarded by Spool.rmu.
type reader struct {
	seg  uint64   // first seq of the segment being read; 0 before the first
	f    *os.File // open on seg, or nil
	off  int64    // offset of the next frame in seg
	hdr  bool     // seg's header has been checked (or reading started past it)
	prev uint64   // highest seq returned, skipped as acknowledged, or known lost

	look     *held  // a record read ahead (to learn its time) and not yet returned
	inflight []mark // records returned by Next and not acknowledged, oldest first
	ack      ackPos // what the cursor file holds

	// Damage at or before (hwSeg, hwOff) has been reported already: after a
	// Rewind the same bytes are read again and must not count twice.
	hwSeg uint64
	hwOff int64
}

// mark locates a record returned to the caller: its seq, its time and
// where the frame after it starts.
type mark struct {
	seq uint64
	t   time.Time
	seg uint64
	off int64
}

type held struct {
	rec Record
	end mark
}

func (r *reader) closeFile() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// Next returns the oldest record not yet returned, waiting for one to be
// appended when there is none. Records come out in order, each once, until
// Rewind or a reopen: after those, everything not acknowledged comes out
// again. Damage met on the way is reported and skipped.
//
// One goroutine replays at a time: Next, Ack, Rewind and Replay must not be
// called concurrently with each other (Append and the metric methods may).
func (s *Spool) Next(ctx context.Context) (Record, error) {
	for {
		s.rmu.Lock()
		if s.rClosed {
			s.rmu.Unlock()
			return Record{}, ErrClosed
		}
		rec, ok, err := s.next()
		if err == nil && !ok {
			err = s.settleIdle()
		}
		s.rmu.Unlock()
		if err != nil {
			return Record{}, err
		}
		if ok {
			return rec, nil
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return Record{}, ctx.Err()
		case <-s.done:
			return Record{}, ErrClosed
		}
	}
}

// Replay hands every unacknowledged record to fn, oldest first (starting
// over at the first one, like Rewind, whatever Next returned before), and
// acknowledges each once fn returns nil. It stops at the first error from
// fn and returns it; the record fn failed on comes first again at the next
// Replay or Next. It returns nil once nothing is pending.
func (s *Spool) Replay(ctx context.Context, fn func(Record) error) error {
	if err := s.Rewind(); err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.rmu.Lock()
		if s.rClosed {
			s.rmu.Unlock()
			return ErrClosed
		}
		rec, ok, err := s.next()
		if err == nil && !ok {
			err = s.settleIdle()
		}
		s.rmu.Unlock()
		if err != nil || !ok {
			return err
		}
		if err := fn(rec); err != nil {
			if rerr := s.Rewind(); rerr != nil {
				return errors.Join(err, rerr)
			}
			return err
		}
		if err := s.Ack(rec.Seq); err != nil {
			return err
		}
	}
}

// Ack records that the database holds every record up to and including
// seq, durably (the cursor file is synced before Ack returns), and deletes
// segments left holding only acknowledged records. Acknowledging is
// cumulative: Ack(seq) must only be called once every record before seq is
// in the database too. An Ack at or below an earlier one does nothing.
//
// A crash after the database committed but before Ack returned replays the
// records again after Open; the database must absorb such duplicates.
func (s *Spool) Ack(seq uint64) error {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.rClosed {
		return ErrClosed
	}
	s.mu.Lock()
	acked, last := s.acked, s.nextSeq-1
	s.mu.Unlock()
	if seq <= acked {
		return nil
	}
	if seq > last {
		return fmt.Errorf("spool: ack %d beyond the last record appended (%d)", seq, last)
	}
	r := &s.r
	pos := ackPos{seq: seq, seg: r.ack.seg, off: r.ack.off}
	n := 0
	for n < len(r.inflight) && r.inflight[n].seq <= seq {
		pos.seg, pos.off = r.inflight[n].seg, r.inflight[n].off
		n++
	}
	r.inflight = slices.Delete(r.inflight, 0, n)
	if r.look != nil && r.look.rec.Seq <= seq {
		pos.seg, pos.off = r.look.end.seg, r.look.end.off
		r.look = nil
	}
	if len(r.inflight) == 0 && r.look == nil && r.prev >= seq {
		// Everything the reader has passed is now delivered or was lost
		// to damage; acknowledge up to where it stands.
		pos = ackPos{seq: r.prev, seg: r.seg, off: r.off}
	}
	if err := s.persistAck(pos); err != nil {
		return err
	}
	return s.refreshOldest()
}

// Rewind makes Next start again at the first unacknowledged record, for a
// replayer that gives up on the records it has taken (the database refused
// them, or it is shutting down).
func (s *Spool) Rewind() error {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.rClosed {
		return ErrClosed
	}
	r := &s.r
	r.closeFile()
	r.look, r.inflight = nil, nil
	s.mu.Lock()
	r.seg, r.off = s.startOf(r.ack)
	r.prev = s.acked
	if len(s.segs) > 0 {
		r.prev = max(r.prev, s.segs[0].first-1)
	}
	s.mu.Unlock()
	r.hdr = r.off >= headerLen
	return nil
}

// persistAck writes p to the cursor file, then lets go of what it covers.
func (s *Spool) persistAck(p ackPos) error {
	if err := s.cur.write(p); err != nil {
		return fmt.Errorf("spool: ack: %w", err)
	}
	s.r.ack = p
	s.mu.Lock()
	s.acked = max(s.acked, p.seq)
	s.dropAckedLocked()
	s.mu.Unlock()
	return nil
}

// settleIdle runs when the reader has nothing to return. Records it passed
// without returning them (lost to damage) would otherwise stay pending,
// and Age would grow, until some later record is acknowledged.
func (s *Spool) settleIdle() error {
	moved, err := s.settle()
	if err != nil || !moved {
		return err
	}
	return s.refreshOldest()
}

// settle acknowledges up to the reader's position when nothing it returned
// is outstanding.
func (s *Spool) settle() (bool, error) {
	r := &s.r
	if len(r.inflight) > 0 || r.look != nil {
		return false, nil
	}
	s.mu.Lock()
	behind := r.prev > s.acked
	s.mu.Unlock()
	if !behind {
		return false, nil
	}
	return true, s.persistAck(ackPos{seq: r.prev, seg: r.seg, off: r.off})
}

// refreshOldest recomputes the time of the oldest pending record after the
// acknowledged position moved.
func (s *Spool) refreshOldest() error {
	r := &s.r
	for range 3 {
		s.mu.Lock()
		idle := s.nextSeq-1 <= s.acked
		if idle {
			s.oldest = time.Time{}
		}
		s.mu.Unlock()
		if idle {
			return nil
		}
		var t time.Time
		switch {
		case len(r.inflight) > 0:
			t = r.inflight[0].t
		default:
			if err := s.peek(); err != nil {
				return err
			}
			if r.look != nil {
				t = r.look.rec.Time
			}
		}
		s.mu.Lock()
		switch {
		case s.nextSeq-1 <= s.acked:
			s.oldest = time.Time{}
		case !t.IsZero():
			s.oldest = t
		}
		done := s.nextSeq-1 <= s.acked || !t.IsZero()
		s.mu.Unlock()
		if done {
			return nil
		}
		// Pending records but none readable: either one was appended
		// after peek looked, or the reader passed damaged ones.
		if _, err := s.settle(); err != nil {
			return err
		}
	}
	return nil
}

// peek reads the next record ahead, if any, without returning it.
func (s *Spool) peek() error {
	if s.r.look != nil {
		return nil
	}
	rec, end, ok, err := s.read()
	if ok {
		s.r.look = &held{rec: rec, end: end}
	}
	return err
}

// next returns the next record and remembers it as in flight.
func (s *Spool) next() (Record, bool, error) {
	r := &s.r
	if r.look != nil {
		h := r.look
		r.look = nil
		r.inflight = append(r.inflight, h.end)
		return h.rec, true, nil
	}
	rec, end, ok, err := s.read()
	if ok {
		r.inflight = append(r.inflight, end)
	}
	return rec, ok, err
}

// read decodes frames from the reader's position until it finds a record
// beyond the acknowledged one, reporting and stepping over damage. It
// returns false when it reaches the end of what has been synced.
func (s *Spool) read() (Record, mark, bool, error) {
	r := &s.r
	for {
		s.mu.Lock()
		i, found := slices.BinarySearchFunc(s.segs, r.seg, func(g segment, first uint64) int { return cmp.Compare(g.first, first) })
		if !found {
			// Not started yet, or the segment was deleted (all of it
			// acknowledged) under us: go on with the next one.
			r.closeFile()
			if i == len(s.segs) {
				s.mu.Unlock()
				return Record{}, mark{}, false, nil
			}
			r.seg, r.off, r.hdr = s.segs[i].first, 0, false
		}
		end := s.segs[i].size
		sealed := i+1 < len(s.segs)
		hi := s.nextSeq // no record in this segment has this seq or higher
		if sealed {
			hi = s.segs[i+1].first
		}
		active := s.active == r.seg
		acked := s.acked
		s.mu.Unlock()
		path := s.path(segName(r.seg))
		// Acknowledged records are accounted for, even those the reader
		// never saw (Ack ran ahead of it and their segments are gone).
		r.prev = max(r.prev, acked)

		if r.f == nil {
			f, err := os.Open(path)
			if errors.Is(err, fs.ErrNotExist) && !active {
				s.forget(r.seg)
				if sealed {
					s.lose(r, path, 0, 0, hi, "segment file missing")
				}
				continue
			}
			if err != nil {
				return Record{}, mark{}, false, fmt.Errorf("spool: %w", err)
			}
			r.f = f
		}

		badFrom, from := int64(-1), r.off
		var why error
		if !r.hdr {
			r.hdr = true
			hdr := make([]byte, headerLen)
			err := readFull(r.f, hdr, 0)
			if err == nil && end < headerLen {
				err = errShortSeg
			}
			if err == nil {
				err = checkHeader(hdr, r.seg)
			} else if isDataErr(err) {
				err = errShortSeg
			} else {
				return Record{}, mark{}, false, fmt.Errorf("spool: read %s: %w", path, err)
			}
			r.off = min(headerLen, end)
			if err != nil {
				badFrom, from, why = 0, r.off, err
			}
		}

		if badFrom < 0 {
			if r.off >= end {
				if !sealed {
					return Record{}, mark{}, false, nil
				}
				if hi-1 > r.prev {
					// The file ends cleanly but records are missing
					// (cut at a frame boundary).
					s.lose(r, path, end, 0, hi, fmt.Sprintf("records %d..%d missing after the end of the segment", r.prev+1, hi-1))
				}
				r.closeFile()
				r.seg, r.off, r.hdr = hi, 0, false
				continue
			}
			rec, next, err := readFrame(r.f, r.off, end)
			if err == nil && rec.Seq <= acked && rec.Seq <= r.prev {
				// Acknowledged before: reading resumed from the
				// segment's start.
				r.off = next
				continue
			}
			if err == nil && rec.Seq > r.prev && rec.Seq < hi {
				if rec.Seq > r.prev+1 {
					s.lose(r, path, r.off, 0, rec.Seq, fmt.Sprintf("records %d..%d missing", r.prev+1, rec.Seq-1))
				}
				r.off, r.prev = next, rec.Seq
				if rec.Seq <= acked {
					continue
				}
				return rec, mark{seq: rec.Seq, t: rec.Time, seg: r.seg, off: next}, true, nil
			}
			if err != nil && !isDataErr(err) {
				return Record{}, mark{}, false, fmt.Errorf("spool: read %s: %w", path, err)
			}
			if err == nil {
				err = errFrameSeq
			}
			badFrom, from, why = r.off, r.off+1, err
			// A flipped bit in a payload leaves the length intact: try the
			// frame after it before scanning byte by byte.
			var n [4]byte
			if readFull(r.f, n[:], r.off) == nil {
				if skip := r.off + frameHeaderLen + int64(le.Uint32(n[:])); skip < end {
					if rec, _, err := readFrame(r.f, skip, end); err == nil && rec.Seq > r.prev && rec.Seq < hi {
						from = skip
					}
				}
			}
		}

		// Damage from badFrom: find solid ground again in this segment.
		at, rec, _, err := resync(r.f, from, end, r.prev+1, hi)
		if err != nil {
			return Record{}, mark{}, false, fmt.Errorf("spool: read %s: %w", path, err)
		}
		upTo, stop := end, hi // everything before stop that we have not seen is gone
		if at >= 0 {
			upTo, stop = at, rec.Seq
		}
		s.lose(r, path, badFrom, upTo-badFrom, stop, why.Error())
		r.off = upTo
	}
}

// lose reports damage at off in the reader's segment (n bytes, possibly
// none) after which the next record that can exist is stop, and moves the
// reader past the records that went with it.
func (s *Spool) lose(r *reader, path string, off, n int64, stop uint64, reason string) {
	var lost uint64
	if stop > r.prev+1 {
		lost = stop - 1 - r.prev
		r.prev = stop - 1
	}
	if r.seg < r.hwSeg || (r.seg == r.hwSeg && off <= r.hwOff) {
		return // reported before a Rewind
	}
	r.hwSeg, r.hwOff = r.seg, off
	s.report(&CorruptError{File: path, Offset: off, Len: n, Lost: lost, Reason: reason})
}

// forget drops a segment whose file vanished (removed by hand) from the
// books.
func (s *Spool) forget(first uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearchFunc(s.segs, first, func(g segment, first uint64) int { return cmp.Compare(g.first, first) })
	if found && s.segs[i].first != s.active {
		s.bytes -= s.segs[i].size
		s.segs = slices.Delete(s.segs, i, i+1)
	}
}
