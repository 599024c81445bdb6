// Package spool keeps batches of records on disk, in order, until the
// database has them.
//
// A writer Appends each encoded batch of results (opaque bytes: the spool
// never looks inside) and gets back a sequence number once the batch is on
// disk, or Writes it (into the page cache: safe from a SIGKILL at once,
// from a power cut after the next Sync); a single replayer takes records
// out again, oldest first, with Next or Replay, and Acks them once
// PostgreSQL has committed them. Acked records are never handed out again;
// everything else survives a crash, a SIGKILL or a power cut and is
// replayed after Open. Delivery is
// at-least-once (a crash between the database's commit and the Ack re-sends
// the batch); the database's unique key turns that into exactly-once.
//
// Records live in append-only segment files (seg-<first seq>.spool) in one
// directory, each framed with its length, sequence number, append time and a
// CRC-32C; see format.go. Damage (a record torn by a crash, a flipped bit,
// a mangled header, garbage) is reported through Options.OnCorrupt, the
// Corrupt and Lost counters and a log line naming the file and offset, and
// skipped: the good records around it are still delivered.
package spool

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Defaults for a zero Options.
const (
	DefaultSegmentBytes = 8 << 20
	DefaultSegmentAge   = time.Minute
	DefaultMaxBytes     = 1 << 30
	DefaultMaxRecord    = 64 << 20
)

var (
	// ErrLocked: another process (or another Open in this one) uses the
	// directory. Two agents sharing a spool would interleave sequence
	// numbers and acknowledge each other's records.
	ErrLocked = errors.New("spool directory is locked by another process")
	// ErrFull: appending would take the spool past Options.MaxBytes. Nothing
	// was written; the caller decides what to do with the batch (keep it in
	// memory and retry, or drop it and count it) and must say so.
	ErrFull = errors.New("spool is full")
	// ErrTooLarge: one record exceeds Options.MaxRecord.
	ErrTooLarge = errors.New("record too large for the spool")
	// ErrClosed: the Spool was closed.
	ErrClosed = errors.New("spool is closed")
)

// Options tunes a Spool. The zero value is ready to use.
type Options struct {
	// SegmentBytes: the active segment is closed and a new one started
	// when the next append would take it past this size. Acknowledged data
	// is deleted a whole segment at a time, so this is also the granularity
	// of reclaiming disk. Default 8 MiB.
	SegmentBytes int64
	// SegmentAge: the active segment is also closed once its first record
	// is this old, so a trickle of records does not keep acknowledged data
	// on disk indefinitely. Default 1 minute.
	SegmentAge time.Duration
	// MaxBytes bounds the segments' total size on disk. An Append that
	// would exceed it fails with ErrFull and writes nothing. Default 1 GiB.
	MaxBytes int64
	// MaxRecord bounds one record's payload. Default 64 MiB.
	MaxRecord int
	// Logger gets a warning for every corruption found. Default: discard.
	Logger *slog.Logger
	// OnCorrupt, when set, is called for every corruption found, from the
	// goroutine that found it (Open's, or the replayer's). It must not
	// block or call Append, Next, Ack, Rewind, Replay or Close; the metric
	// methods are fine.
	OnCorrupt func(*CorruptError)
	// Now is the clock for record times, segment age and Age. Default
	// time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.SegmentAge <= 0 {
		o.SegmentAge = DefaultSegmentAge
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxRecord <= 0 || o.MaxRecord > maxFrameLen {
		o.MaxRecord = min(DefaultMaxRecord, maxFrameLen)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Record is one appended payload.
type Record struct {
	// Seq is the record's place in the spool: 1, 2, 3… across segments and
	// restarts. Ack(Seq) acknowledges it and every record before it.
	Seq uint64
	// Time is when the record was appended.
	Time time.Time
	// Data is the payload. It belongs to the caller.
	Data []byte
}

// CorruptError describes damaged data found in the spool and skipped.
type CorruptError struct {
	File   string // segment or cursor file
	Offset int64  // where the bad bytes start
	Len    int64  // how many bytes were skipped (0 for a gap in sequence numbers)
	// Lost is how many records are known to be gone, from the gap in
	// sequence numbers around the damage. A record torn by a crash while
	// being appended is not counted: its Append never returned.
	Lost   uint64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("spool: %s at offset %d of %s (%d bytes skipped, %d records lost)",
		e.Reason, e.Offset, e.File, e.Len, e.Lost)
}

// segment is one segment file as the spool tracks it.
type segment struct {
	first uint64 // the seq in its name: no record in it has a lower one
	// size is the file's size; for the active segment, the end of what
	// was synced, which is all a reader may look at.
	size int64
}

// Spool is an open spool directory. One goroutine may Append while another
// replays (Next, Ack, Rewind, Replay); the metric methods may be called
// from anywhere.
type Spool struct {
	dir  string
	opt  Options
	log  *slog.Logger
	lock *os.File

	// wmu serialises appends. Held across the write and fsync, so it is
	// never taken by the reader.
	wmu     sync.Mutex
	w       *os.File  // the active segment, opened lazily
	wStart  time.Time // time of the active segment's first record
	wErr    error     // set when a failed append could not be undone, or a sync failed
	wClosed bool
	// dirty: records Written to w and not yet synced; dirtyDir: w was
	// created since the last sync, so the directory needs one too.
	dirty, dirtyDir bool

	// rmu serialises the replayer's calls.
	rmu     sync.Mutex
	r       reader
	cur     *cursor
	rClosed bool

	// mu guards what both sides share. It is held only briefly and never
	// across I/O except unlinking an acknowledged segment.
	mu sync.Mutex
	// segs is every segment on disk, oldest first.
	segs []segment
	// active is the first seq of the segment appends go to, 0 for none
	// (the next append creates one).
	active  uint64
	nextSeq uint64    // seq of the next record appended
	acked   uint64    // every record up to it is delivered or known lost
	oldest  time.Time // time of the oldest record after acked; zero if none
	bytes   int64
	corrupt uint64
	lost    uint64

	notify chan struct{} // a token after each append, for a waiting Next
	done   chan struct{} // closed by Close
}

// Open opens (creating it if needed) the spool in dir, takes the
// directory's lock, repairs a record torn by a crash at the end of the
// newest segment, and positions the replayer at the first unacknowledged
// record.
func Open(dir string, opt Options) (*Spool, error) {
	opt = opt.withDefaults()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		// A power cut must not take the new directory, and the records
		// about to go into it, along with it.
		if err := syncDir(filepath.Dir(filepath.Clean(dir))); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := lockFile(lock); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	s := &Spool{
		dir:    dir,
		opt:    opt,
		log:    opt.Logger,
		lock:   lock,
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	if err := s.load(); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	return s, nil
}

// load reads the directory's state; see Open.
func (s *Spool) load() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		first, ok := parseSegName(name)
		switch {
		case ok && e.Type().IsRegular():
			info, err := e.Info()
			if err != nil {
				return err
			}
			s.segs = append(s.segs, segment{first: first, size: info.Size()})
		case name == cursorName+".tmp":
			// A cursor creation that crashed before its rename.
			os.Remove(filepath.Join(s.dir, name))
		case name != cursorName && name != "lock":
			s.log.Warn("spool: ignoring unknown file", "dir", s.dir, "file", name)
		}
	}
	slices.SortFunc(s.segs, func(a, b segment) int { return cmp.Compare(a.first, b.first) })

	cur, pos, err := openCursor(s.dir)
	if errors.Is(err, errBadCursor) {
		s.report(&CorruptError{File: s.path(cursorName), Reason: err.Error()})
	} else if err != nil {
		return err
	}
	s.cur = cur
	s.acked = pos.seq

	// The newest segment is the one a crash can have left torn.
	s.nextSeq = s.acked + 1
	if len(s.segs) > 0 {
		if err := s.repairLast(); err != nil {
			return err
		}
	}
	for _, g := range s.segs {
		s.bytes += g.size
	}
	s.dropAckedLocked()

	// The replayer starts at the segment that holds acked+1.
	s.r.ack = pos
	s.r.prev = s.acked
	if len(s.segs) > 0 {
		s.r.prev = max(s.r.prev, s.segs[0].first-1)
	}
	s.r.seg, s.r.off = s.startOf(pos)
	s.r.hdr = s.r.off >= headerLen
	s.r.ack.seg, s.r.ack.off = s.r.seg, s.r.off
	// Learn the oldest pending record's time. Corruption found on the way
	// is reported now rather than at the first Next.
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return s.refreshOldest()
}

// repairLast checks the newest segment: it truncates a torn final record
// and removes a segment whose creation a crash interrupted, and it decides
// the next sequence number and whether appends may continue in it.
func (s *Spool) repairLast() error {
	g := &s.segs[len(s.segs)-1]
	path := s.path(segName(g.first))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()

	hdr := make([]byte, headerLen)
	herr := readFull(f, hdr, 0)
	if herr == nil {
		herr = checkHeader(hdr, g.first)
	} else if isDataErr(herr) {
		herr = errShortSeg
	} else {
		return herr
	}
	if herr != nil {
		// Creating a segment writes its header and first records and
		// syncs them together; a crash in between leaves a short or
		// all-zero file holding nothing that was ever acknowledged.
		if zero, err := allZero(f, g.size); err != nil {
			return err
		} else if g.size <= headerLen || zero {
			return s.removeTorn(path, g.size)
		}
		// A damaged header on a segment with content: leave it to the
		// replayer (which reports it and recovers what it can) and append
		// to a new segment, numbered after every record still in it.
		prev, _, _, err := walk(f, min(headerLen, g.size), g.size, g.first)
		if err != nil {
			return err
		}
		if prev < g.first {
			// No record in it either: as good as a torn creation.
			return s.removeTorn(path, g.size)
		}
		s.nextSeq = max(s.nextSeq, prev+1, g.first+1)
		return nil
	}

	// Damage in the middle is left for the replayer to report; only what
	// follows the last valid frame is cut.
	prev, end, firstTime, err := walk(f, headerLen, g.size, g.first)
	if err != nil {
		return err
	}
	if end < g.size {
		s.report(&CorruptError{File: path, Offset: end, Len: g.size - end,
			Reason: "incomplete record at the end of the newest segment (crash while appending), truncated"})
		if err := f.Truncate(end); err != nil {
			return fmt.Errorf("truncate %s: %w", path, err)
		}
		if err := fdatasync(f); err != nil {
			return fmt.Errorf("sync %s: %w", path, err)
		}
		g.size = end
	}
	s.active = g.first
	s.wStart = firstTime
	s.nextSeq = max(s.nextSeq, prev+1, g.first)
	return nil
}

// removeTorn removes the newest segment, whose creation a crash cut short,
// and looks at the one before, which is now the newest.
func (s *Spool) removeTorn(path string, size int64) error {
	s.report(&CorruptError{File: path, Len: size, Reason: "incomplete segment (crash while creating it), removed"})
	if err := os.Remove(path); err != nil {
		return err
	}
	first := s.segs[len(s.segs)-1].first
	s.segs = s.segs[:len(s.segs)-1]
	if len(s.segs) > 0 {
		return s.repairLast()
	}
	s.nextSeq = max(s.nextSeq, first)
	return nil
}

// walk reads the frames of a segment from off to size, stepping over
// damage, and returns the last valid record's seq (lo-1 when none), where
// it ends, and the first valid record's time.
func walk(f *os.File, off, size int64, lo uint64) (prev uint64, end int64, first time.Time, err error) {
	prev, end = lo-1, off
	for off < size {
		rec, next, err := readFrame(f, off, size)
		if err == nil && rec.Seq > prev {
			if first.IsZero() {
				first = rec.Time
			}
			prev, end, off = rec.Seq, next, next
			continue
		}
		if err != nil && !isDataErr(err) {
			return 0, 0, time.Time{}, err
		}
		at, _, _, err := resync(f, off+1, size, prev+1, maxSeq)
		if err != nil {
			return 0, 0, time.Time{}, err
		}
		if at < 0 {
			break
		}
		off = at
	}
	return prev, end, first, nil
}

// allZero says whether the file's first n bytes are all zero, what a
// power cut can leave in a file whose size was extended before its data
// reached the disk.
func allZero(f *os.File, n int64) (bool, error) {
	buf := make([]byte, 64<<10)
	for off := int64(0); off < n; {
		k, err := f.ReadAt(buf[:min(int64(len(buf)), n-off)], off)
		for _, b := range buf[:k] {
			if b != 0 {
				return false, nil
			}
		}
		off += int64(k)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return true, nil
			}
			return false, err
		}
	}
	return true, nil
}

// startOf returns where reading resumes after an acknowledgement: the
// segment that holds the next record, at the hinted offset when the hint
// points into that segment, else at its start.
func (s *Spool) startOf(p ackPos) (uint64, int64) {
	var seg uint64
	var size int64
	for _, g := range s.segs {
		if g.first > p.seq+1 {
			break
		}
		seg, size = g.first, g.size
	}
	if seg == 0 {
		return 0, 0
	}
	if p.seg == seg && p.off >= headerLen && p.off <= size {
		return seg, p.off
	}
	return seg, 0
}

// dropAckedLocked deletes segments whose every record is acknowledged,
// oldest first, never the active one. A delete lost to a crash is
// harmless: the cursor says the records are acknowledged, and the segment
// goes again on the next Open.
func (s *Spool) dropAckedLocked() {
	for len(s.segs) > 0 {
		g := s.segs[0]
		last := s.nextSeq - 1 // the highest seq the segment could hold
		if len(s.segs) > 1 {
			last = s.segs[1].first - 1
		}
		if g.first == s.active || last > s.acked {
			return
		}
		path := s.path(segName(g.first))
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// Keep tracking it; the next attempt may succeed.
			s.log.Warn("spool: cannot remove acknowledged segment", "file", path, "err", err)
			return
		}
		s.bytes -= g.size
		s.segs = s.segs[1:]
	}
}

func (s *Spool) path(name string) string { return filepath.Join(s.dir, name) }

// report logs, counts and passes on one corruption. Called without mu.
func (s *Spool) report(e *CorruptError) {
	s.mu.Lock()
	s.corrupt++
	s.lost += e.Lost
	s.mu.Unlock()
	s.log.Warn("spool: skipping corrupt data", "file", e.File, "offset", e.Offset,
		"bytes", e.Len, "records_lost", e.Lost, "reason", e.Reason)
	if s.opt.OnCorrupt != nil {
		s.opt.OnCorrupt(e)
	}
}

// Bytes is the size of the segments on disk, what MaxBytes limits.
func (s *Spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// Pending is how many records are appended and not yet acknowledged (nor
// known lost to corruption).
func (s *Spool) Pending() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextSeq - 1 - s.acked
}

// Age is how long the oldest pending record has waited, 0 when none.
func (s *Spool) Age() time.Duration {
	s.mu.Lock()
	oldest := s.oldest
	s.mu.Unlock()
	if oldest.IsZero() {
		return 0
	}
	return max(s.opt.Now().Sub(oldest), 0)
}

// Corrupt is how many times damaged data was found and skipped.
func (s *Spool) Corrupt() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.corrupt
}

// Lost is how many records are known lost to damage.
func (s *Spool) Lost() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// Close syncs what Write left unsynced and releases the files and the
// directory lock. A Next blocked waiting returns ErrClosed.
func (s *Spool) Close() error {
	s.wmu.Lock()
	if s.wClosed {
		s.wmu.Unlock()
		return nil
	}
	var serr error
	if s.dirty {
		serr = s.syncLocked()
	}
	s.wClosed = true
	close(s.done)
	s.wmu.Unlock()

	s.rmu.Lock()
	s.rClosed = true
	s.rmu.Unlock()

	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return errors.Join(serr, s.closeFiles())
}

func (s *Spool) closeFiles() error {
	var errs []error
	if s.w != nil {
		errs = append(errs, s.w.Close())
		s.w = nil
	}
	if s.r.f != nil {
		errs = append(errs, s.r.f.Close())
		s.r.f = nil
	}
	if s.cur != nil {
		errs = append(errs, s.cur.close())
		s.cur = nil
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close()) // releases the flock
		s.lock = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close spool: %w", err)
	}
	return nil
}
