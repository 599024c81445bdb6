package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/prober/spool"
	"github.com/cutoffnet/cutoff/store"
)

// Pipe is the agent's path for results without the scheduler and the
// engines in front of it: the same collector (encode, write into the
// spool at once, fsync every cfg.Flush), the same writer (replay the
// spool into store.Ingest, in order, acknowledging what committed). Results enter through Result and Verdict
// exactly as the scheduler hands them over; they leave into PostgreSQL.
// It exists so that what the path carries can be measured (cutoff bench
// ingest) on the code a vantage runs, not a copy of it.
type Pipe struct {
	a      *Agent
	stop   context.CancelFunc
	wg     sync.WaitGroup
	closed bool
}

// NewPipe opens cfg.Spool and the database cfg.DB and starts the writer
// and the flusher (every cfg.Flush). Only DB, Vantage, Spool, Flush,
// SpoolMax and the fields Validate checks matter.
func NewPipe(ctx context.Context, cfg Config, log *slog.Logger) (*Pipe, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg, log: log.With("vantage", cfg.Vantage), reg: prometheus.NewRegistry()}
	sp, err := spool.Open(cfg.spoolDir(), spool.Options{MaxBytes: cfg.SpoolMax, Logger: a.log})
	if err != nil {
		return nil, fmt.Errorf("open spool %s: %w", cfg.spoolDir(), err)
	}
	st, err := store.Dial(ctx, cfg.DB)
	if err != nil {
		sp.Close()
		return nil, err
	}
	a.sp, a.st = sp, st
	a.m = newMetrics(a.reg, sp, nil)
	a.col = newCollector(cfg.Vantage, sp, a.m, a.log, &a.collected)
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	p := &Pipe{a: a, stop: stop}
	p.wg.Go(func() { a.write(bg) })
	p.wg.Go(func() { a.col.run(bg, cfg.Flush) })
	return p, nil
}

// Result hands over one probe result, as the scheduler does: it must be
// called from one goroutine at a time and returns at once.
func (p *Pipe) Result(r sched.Result) { p.a.col.Result(r) }

// Verdict hands over one visit's verdict.
func (p *Pipe) Verdict(v sched.Verdict) { p.a.col.Verdict(v) }

// Drain writes what was collected into the spool and waits until the
// writer has put every spooled batch into the database, or ctx ends. It
// fails when results could not be made durable (see Close).
func (p *Pipe) Drain(ctx context.Context) error {
	p.a.col.flush()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for p.a.sp.Pending() > 0 || p.a.col.holding() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain: %d batches still spooled: %w", p.a.sp.Pending(), ctx.Err())
		case <-t.C:
		}
	}
	return p.a.col.err()
}

// Stats reports how many results were handed over and how many the
// database took as new rows.
func (p *Pipe) Stats() Stats { return p.a.Stats() }

// SpoolBytes is the size of the spool on disk.
func (p *Pipe) SpoolBytes() int64 { return p.a.sp.Bytes() }

// Close stops the writer and the collector and closes the spool and the
// database pool; what was not drained stays in the spool. It fails when
// some result handed over is neither in the spool nor in the database:
// dropped at the memory bound, or held in memory by a full spool.
func (p *Pipe) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	p.stop()
	p.wg.Wait()
	p.a.st.Close()
	return errors.Join(p.a.col.err(), p.a.sp.Close())
}
