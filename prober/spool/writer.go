package spool

import (
	"fmt"
	"os"
)

// Append writes one record and returns its sequence number once the record
// is on disk: the write is fdatasync'ed (and, for a new segment, the
// directory too) before Append returns, so a record survives SIGKILL and a
// power cut from then on.
//
// Append takes no context: its only wait is the disk's, which cannot be
// cancelled.
func (s *Spool) Append(data []byte) (uint64, error) {
	return s.AppendBatch([][]byte{data})
}

// AppendBatch writes several records with a single fdatasync (group
// commit) and returns the sequence number of the first; record i gets
// first+i. Either all of them are durable when it returns nil, or none is
// delivered: a failed write is cut off again. An empty batch does nothing
// and returns 0.
func (s *Spool) AppendBatch(batch [][]byte) (uint64, error) {
	return s.append(batch, true)
}

// Write is AppendBatch without the wait for the disk: it returns once the
// records are written into the segment file, that is in the kernel's page
// cache. From then on they survive the process being killed (SIGKILL, a
// panic, the OOM killer) but not yet a power cut or a kernel crash; Sync
// makes them durable. The replayer sees them at once. Records Written and
// not yet synced are synced before their segment is closed, and by Close.
//
// A writer that appends as soon as it has something and syncs on a timer
// bounds what a killed process loses to what it had not yet written, and
// what a power cut loses to one timer interval, at the cost of one
// fdatasync per interval rather than per append.
func (s *Spool) Write(batch [][]byte) (uint64, error) {
	return s.append(batch, false)
}

// Sync makes every record Written so far durable (fdatasync, and the
// directory's entry for a segment created since the last Sync). It does
// nothing when there is nothing to sync. A failed Sync is returned again
// by every later Sync and Append, as the written data may be lost.
func (s *Spool) Sync() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wClosed {
		return ErrClosed
	}
	return s.syncLocked()
}

// syncLocked syncs what Write left unsynced. Called with wmu held.
func (s *Spool) syncLocked() error {
	if s.wErr != nil {
		return s.wErr
	}
	if !s.dirty || s.w == nil {
		return nil
	}
	err := fdatasync(s.w)
	if err == nil && s.dirtyDir {
		err = syncDir(s.dir)
	}
	if err != nil {
		// After a failed fsync the kernel may have dropped the dirty
		// pages: nothing written since the last good Sync is safe, and
		// a retry could succeed without writing them. Say so from now on.
		s.wErr = fmt.Errorf("spool: sync %s: %w", s.path(segName(s.active)), err)
		return s.wErr
	}
	s.dirty, s.dirtyDir = false, false
	return nil
}

func (s *Spool) append(batch [][]byte, sync bool) (uint64, error) {
	if len(batch) == 0 {
		return 0, nil
	}
	var need int64
	for _, d := range batch {
		if len(d) > s.opt.MaxRecord {
			return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(d), s.opt.MaxRecord)
		}
		need += frameLen(len(d))
	}

	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wClosed {
		return 0, ErrClosed
	}
	if s.wErr != nil {
		return 0, s.wErr
	}
	now := s.opt.Now()

	s.mu.Lock()
	var size int64
	if s.active != 0 {
		size = s.segs[len(s.segs)-1].size // the active segment is the newest
	}
	used := size > headerLen
	rotate := s.active != 0 && used &&
		(size+need > s.opt.SegmentBytes || (!s.wStart.IsZero() && now.Sub(s.wStart) >= s.opt.SegmentAge))
	// When full, an active segment holding only acknowledged records is
	// worth closing: that deletes it and frees its space.
	if s.active != 0 && used && s.bytes+need > s.opt.MaxBytes && s.nextSeq-1 <= s.acked {
		rotate = true
	}
	if rotate && s.dirty {
		// The segment being closed must be as durable as Sync promised
		// for everything before it.
		s.mu.Unlock()
		if err := s.syncLocked(); err != nil {
			return 0, err
		}
		s.mu.Lock()
	}
	if rotate {
		s.active = 0
		s.dropAckedLocked()
	}
	newSeg := s.active == 0
	total := need
	if newSeg {
		total += headerLen
	}
	if s.bytes+total > s.opt.MaxBytes {
		onDisk := s.bytes
		s.mu.Unlock()
		if rotate {
			s.closeWriter()
		}
		return 0, fmt.Errorf("%w: %d bytes on disk, limit %d, batch of %d records needs %d more",
			ErrFull, onDisk, s.opt.MaxBytes, len(batch), total)
	}
	first := s.nextSeq
	s.mu.Unlock()
	if rotate {
		s.closeWriter()
	}

	buf := make([]byte, 0, total)
	if newSeg {
		buf = append(buf, encodeHeader(first)...)
	}
	nanos := now.UnixNano()
	for i, d := range batch {
		buf = appendFrame(buf, first+uint64(i), nanos, d)
	}

	path := s.path(segName(first))
	var off int64
	if newSeg {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
		if err != nil {
			return 0, fmt.Errorf("create segment: %w", err)
		}
		s.w = f
	} else {
		off = size
		if s.w == nil {
			path = s.path(segName(s.active))
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				return 0, fmt.Errorf("open segment: %w", err)
			}
			s.w = f
		}
	}
	_, err := s.w.WriteAt(buf, off)
	if err == nil && sync {
		err = fdatasync(s.w)
	}
	if err == nil && sync && (newSeg || s.dirtyDir) {
		// The new file's directory entry must be as durable as its data.
		err = syncDir(s.dir)
	}
	if err != nil {
		s.undo(newSeg, path, off)
		return 0, fmt.Errorf("append to %s: %w", path, err)
	}
	if sync {
		s.dirty, s.dirtyDir = false, false
	} else {
		s.dirty = true
		s.dirtyDir = s.dirtyDir || newSeg
	}

	s.mu.Lock()
	if newSeg {
		s.segs = append(s.segs, segment{first: first, size: int64(len(buf))})
		s.active = first
		s.wStart = now
	} else {
		s.segs[len(s.segs)-1].size += int64(len(buf))
		if s.wStart.IsZero() {
			s.wStart = now
		}
	}
	s.bytes += int64(len(buf))
	if s.nextSeq-1 == s.acked {
		s.oldest = now
	}
	s.nextSeq = first + uint64(len(batch))
	s.mu.Unlock()

	select {
	case s.notify <- struct{}{}:
	default: // a wake-up is already pending
	}
	return first, nil
}

// undo removes what a failed append may have left, so that no reader ever
// sees a record whose Append reported failure, and the next append starts
// from a clean end. If that fails too, the spool refuses further appends
// (the agent can Close and Open it again, which repairs the tail).
func (s *Spool) undo(newSeg bool, path string, off int64) {
	if newSeg {
		s.closeWriter()
		if err := os.Remove(path); err != nil {
			s.wErr = fmt.Errorf("spool: undo failed append: %w", err)
		}
		return
	}
	err := s.w.Truncate(off)
	if err == nil {
		err = fdatasync(s.w)
	}
	if err != nil {
		s.wErr = fmt.Errorf("spool: undo failed append: %w", err)
	}
}

// closeWriter closes the active segment's file, synced already (by the
// append, or before a rotation) or removed.
func (s *Spool) closeWriter() {
	if s.w != nil {
		s.w.Close()
		s.w = nil
	}
}
