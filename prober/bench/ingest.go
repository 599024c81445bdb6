package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/agent"
	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/store"
)

// Ingest measures results per second into PostgreSQL two ways: through
// the agent's path (collector, spool write and fsync, writer, COPY) and
// straight through store.Ingest in fixed batches, the foundation's
// figure. It writes synthetic results into DB, which must be a migrated
// database the benchmark may fill (cutoff bench makes a throwaway one).
type Ingest struct {
	DB string
	// Results through each path (default 2,000,000).
	Results int
	// Batch is the raw path's batch size (default 10,000).
	Batch int
	// Flush is the collector's flush interval (default the agent's).
	Flush time.Duration
	// Limit bounds each path (default 3 min): what is in by then counts.
	Limit time.Duration
	Log   *slog.Logger
}

// IngestReport holds the figures.
type IngestReport struct {
	// Fsync and SyncCommit are the server's fsync and synchronous_commit.
	Fsync, SyncCommit string
	Agent, Raw        IngestFigure
	Batch             int
	Flush             time.Duration
}

// IngestFigure is one path's run.
type IngestFigure struct {
	// Results handed in; Ingested rows the database took as new.
	Results, Ingested int64
	// Elapsed from the first result handed in to the last committed.
	Elapsed time.Duration
	// Batches written (the agent's: spool records).
	Batches int
}

// Rate is results per second into the database.
func (f IngestFigure) Rate() float64 {
	if f.Elapsed <= 0 {
		return 0
	}
	return float64(f.Ingested) / f.Elapsed.Seconds()
}

// Run runs the agent's path, then the raw one.
func (b Ingest) Run(ctx context.Context) (*IngestReport, error) {
	if b.Results <= 0 {
		b.Results = 2_000_000
	}
	if b.Batch <= 0 {
		b.Batch = 10_000
	}
	if b.Flush <= 0 {
		b.Flush = agent.Defaults().Flush
	}
	if b.Limit <= 0 {
		b.Limit = 3 * time.Minute
	}
	if b.Log == nil {
		b.Log = slog.New(slog.DiscardHandler)
	}
	rep := &IngestReport{Batch: b.Batch, Flush: b.Flush}
	st, err := store.Dial(ctx, b.DB)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := st.Pool().QueryRow(ctx, `SELECT current_setting('fsync'), current_setting('synchronous_commit')`).Scan(&rep.Fsync, &rep.SyncCommit); err != nil {
		return nil, fmt.Errorf("read server settings: %w", err)
	}
	// Each path writes its own hour, so neither meets the other's rows.
	base := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	if rep.Agent, err = b.agentPath(ctx, base); err != nil {
		return rep, err
	}
	if rep.Raw, err = b.rawPath(ctx, st, base.Add(time.Hour)); err != nil {
		return rep, err
	}
	return rep, nil
}

// synth is the i-th synthetic result: a distinct key (sent_at and addr)
// every time, two replies to one timeout, addresses in the lab's range
// (these are rows only: nothing is sent).
func synth(i int, base time.Time) prober.Result {
	a := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
	r := prober.Result{Target: prober.Target{Kind: prober.KindICMP, Addr: a},
		Sent: base.Add(time.Duration(i) * time.Microsecond), Outcome: prober.Timeout}
	if i%3 != 0 {
		r.Outcome, r.RTT, r.Responder = prober.Reply, 3*time.Millisecond, a
	}
	return r
}

func (b Ingest) agentPath(ctx context.Context, base time.Time) (IngestFigure, error) {
	var f IngestFigure
	dir, err := os.MkdirTemp("", "cutoff-bench-spool-")
	if err != nil {
		return f, err
	}
	defer os.RemoveAll(dir)
	cfg := agent.Defaults()
	cfg.DB, cfg.Vantage, cfg.Spool, cfg.Flush = b.DB, "bench-agent", dir, b.Flush
	p, err := agent.NewPipe(ctx, cfg, b.Log)
	if err != nil {
		return f, err
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(ctx, b.Limit)
	defer cancel()
	b.Log.Info("ingest through the agent (collector, spool, writer, COPY)", "results", b.Results, "flush", b.Flush)
	start := time.Now()
	round := base.Unix() / 660
	progress := time.Now()
	for i := range b.Results {
		p.Result(sched.Result{Result: synth(i, base), Round: round})
		f.Results++
		if i%4096 == 0 {
			if ctx.Err() != nil {
				break
			}
			if time.Since(progress) > 2*time.Second {
				progress = time.Now()
				b.Log.Info("ingesting", "handed", f.Results, "ingested", p.Stats().Ingested)
			}
		}
	}
	err = p.Drain(ctx)
	f.Elapsed = time.Since(start)
	f.Ingested = p.Stats().Ingested
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return f, err
	}
	if err != nil {
		b.Log.Warn("time limit reached: counting what was in by then", "limit", b.Limit, "ingested", f.Ingested)
	}
	return f, nil
}

func (b Ingest) rawPath(ctx context.Context, st *store.Store, base time.Time) (IngestFigure, error) {
	var f IngestFigure
	ctx, cancel := context.WithTimeout(ctx, b.Limit)
	defer cancel()
	b.Log.Info("ingest straight through store.Ingest", "results", b.Results, "batch", b.Batch)
	rs := make([]store.Result, 0, b.Batch)
	start := time.Now()
	progress := time.Now()
	for i := 0; i < b.Results && ctx.Err() == nil; {
		rs = rs[:0]
		for ; len(rs) < b.Batch && i < b.Results; i++ {
			r := synth(i, base)
			rs = append(rs, store.Result{Vantage: "bench-raw", Kind: "icmp", Addr: r.Target.Addr, SentAt: r.Sent,
				RTT: r.RTT, Outcome: r.Outcome.String(), Responder: r.Responder, Round: 1})
		}
		n, err := st.IngestResults(ctx, rs)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return f, err
		}
		f.Results += int64(len(rs))
		f.Ingested += n
		f.Batches++
		if time.Since(progress) > 2*time.Second {
			progress = time.Now()
			b.Log.Info("ingesting", "ingested", f.Ingested)
		}
	}
	f.Elapsed = time.Since(start)
	if ctx.Err() != nil && f.Results < int64(b.Results) {
		b.Log.Warn("time limit reached: counting what was in by then", "limit", b.Limit, "ingested", f.Ingested)
	}
	return f, nil
}

// Write prints the figures.
func (r *IngestReport) Write(w io.Writer) {
	fmt.Fprintf(w, "Ingest into PostgreSQL (server fsync=%s, synchronous_commit=%s).\n", r.Fsync, r.SyncCommit)
	fmt.Fprintf(w, "  agent path   %8.0f results/s  (%d results in %.2f s: collector, spool write at once + fsync every %s, writer, COPY)\n",
		r.Agent.Rate(), r.Agent.Ingested, r.Agent.Elapsed.Seconds(), r.Flush)
	fmt.Fprintf(w, "  store.Ingest %8.0f results/s  (%d results in %.2f s, batches of %d)\n",
		r.Raw.Rate(), r.Raw.Ingested, r.Raw.Elapsed.Seconds(), r.Batch)
	if r.Raw.Rate() > 0 {
		fmt.Fprintf(w, "  agent / raw  %8.2f\n", r.Agent.Rate()/r.Raw.Rate())
	}
}
