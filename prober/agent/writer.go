package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cutoffnet/cutoff/store"
)

// maxGroupRows bounds the rows the writer stores in one transaction. The
// collector writes small batches when results trickle in, and many when
// they pour in; the writer takes those waiting together, so that a
// transaction per batch does not become the bottleneck.
const maxGroupRows = 50_000

// ready is a context that is already done: with it, Next hands back a
// record that is waiting and does not wait for one.
var ready = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// group is spooled batches the writer stores in one transaction.
type group struct {
	first, last uint64 // their sequence numbers in the spool
	batch       store.Batch
}

// take waits for the next spooled batch and adds those waiting behind
// it, up to maxGroupRows rows. Batches that cannot be decoded are set
// aside as they are.
func (a *Agent) take(ctx context.Context) (group, error) {
	var g group
	rec, err := a.sp.Next(ctx)
	if err != nil {
		return g, err
	}
	g.first = rec.Seq
	for ; err == nil; rec, err = a.sp.Next(ready) {
		g.last = rec.Seq
		b, derr := decodeBatch(rec.Data)
		if derr != nil {
			a.keepAside(rec.Seq, rec.Data, 0, derr)
			continue
		}
		g.batch.Results = append(g.batch.Results, b.Results...)
		g.batch.Observations = append(g.batch.Observations, b.Observations...)
		if g.batch.Len() >= maxGroupRows {
			break
		}
	}
	return g, nil
}

// write replays the spool into the database, in order, until ctx ends.
//
// A batch leaves the spool only once the database holds it, or for the
// rows the database refuses as bad data (store.ErrInvalid), which are set
// aside in the rejected directory. Every other failure (the server away,
// a statement timeout, a deadlock, a standby after a failover, a
// password or a permission wrong, a table or partition missing) leaves
// the batch where it is: it is retried, with backoff, until it lands.
func (a *Agent) write(ctx context.Context) {
	backoff := 100 * time.Millisecond
	var lastCode string // SQLSTATE of the last refusal logged
	var logged time.Time
	for {
		g, err := a.take(ctx)
		if err != nil {
			return // ctx ended or the spool closed
		}
		for {
			var n store.Counts
			bad, why, err := ingestSplit(ctx, a.st, g.batch, &n)
			a.ingested.Add(n.Results)
			a.m.ingested.WithLabelValues("probe_results").Add(float64(n.Results))
			a.m.ingested.WithLabelValues("observations").Add(float64(n.Observations))
			if err == nil {
				if bad.Len() > 0 {
					a.m.ingestErr.WithLabelValues("invalid").Inc()
					a.setAside(g.first, &bad, why)
				}
				a.m.dbUp.Set(1)
				if a.dbErrors.Swap(0) >= 3 || lastCode != "" {
					a.log.Info("the database takes batches again; replaying the spool", "pending", a.sp.Pending())
				}
				lastCode, backoff = "", 100*time.Millisecond
				if err := a.sp.Ack(g.last); err != nil {
					a.log.Error("spool ack failed: the batch may be sent again (harmless)", "err", err)
				}
				break
			}
			if ctx.Err() != nil {
				return
			}
			a.m.dbUp.Set(0)
			failures := a.dbErrors.Add(1)
			if store.IsConnError(err) {
				a.m.ingestErr.WithLabelValues("unreachable").Inc()
				if failures == 3 {
					a.log.Warn("database unreachable: results go to the spool until it returns", "err", err, "spool", a.cfg.spoolDir())
				}
			} else {
				a.m.ingestErr.WithLabelValues("refused").Inc()
				code := store.SQLState(err)
				if code != lastCode || time.Since(logged) > time.Minute {
					a.log.Error("the database refused a batch: it stays in the spool and is retried until it lands",
						"sqlstate", code, "hint", hint(code), "err", err, "seq", g.first, "pending", a.sp.Pending())
					lastCode, logged = code, time.Now()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// hint says what a refusal that is not the rows' fault usually means.
func hint(sqlstate string) string {
	switch {
	case sqlstate == "":
		return "no SQLSTATE: the connection failed"
	case sqlstate == "25006":
		return "read-only transaction: the server is a standby (a failover?) or default_transaction_read_only is on"
	case sqlstate == "42501":
		return "permission denied: grant this login the cutoff_prober role"
	case strings.HasPrefix(sqlstate, "28"):
		return "authentication failed: check the user and password in --db"
	case sqlstate == "42P01", sqlstate == "23514":
		return "a table or partition is missing: run cutoff migrate"
	case sqlstate == "57014":
		return "statement cancelled or timed out (statement_timeout?)"
	case strings.HasPrefix(sqlstate, "40"):
		return "transaction rolled back (deadlock or serialization failure): transient"
	}
	return "see the PostgreSQL documentation for this SQLSTATE"
}

// ingestSplit stores b. When the database refuses it as bad data, it
// halves it until each refused row is alone, stores the rest, and returns
// the refused rows and why. Any other error ends it: rows stored by then
// are counted in n and stay stored (a retry skips them: Ingest stores each
// row once).
func ingestSplit(ctx context.Context, st *store.Store, b store.Batch, n *store.Counts) (bad store.Batch, why, err error) {
	c, err := st.Ingest(ctx, b)
	if err == nil {
		n.Results += c.Results
		n.Observations += c.Observations
		return store.Batch{}, nil, nil
	}
	if !errors.Is(err, store.ErrInvalid) {
		return store.Batch{}, nil, err
	}
	if b.Len() == 1 {
		return b, err, nil
	}
	var halves [2]store.Batch
	half := b.Len() / 2
	if half <= len(b.Results) {
		halves[0] = store.Batch{Results: b.Results[:half]}
		halves[1] = store.Batch{Results: b.Results[half:], Observations: b.Observations}
	} else {
		k := half - len(b.Results)
		halves[0] = store.Batch{Results: b.Results, Observations: b.Observations[:k]}
		halves[1] = store.Batch{Observations: b.Observations[k:]}
	}
	for _, h := range halves {
		hb, hwhy, err := ingestSplit(ctx, st, h, n)
		if err != nil {
			return store.Batch{}, nil, err
		}
		bad.Results = append(bad.Results, hb.Results...)
		bad.Observations = append(bad.Observations, hb.Observations...)
		why = cmp.Or(why, hwhy)
	}
	return bad, why, nil
}

// setAside keeps rows the database refused as bad data in the rejected
// directory, to be looked at and replayed (cutoff probe --replay-rejected).
func (a *Agent) setAside(seq uint64, bad *store.Batch, why error) {
	data, err := encodeBatch(bad)
	if err != nil {
		a.log.Error("cannot encode refused rows to set them aside; they are lost", "rows", bad.Len(), "why", why, "err", err)
		return
	}
	a.keepAside(seq, data, bad.Len(), why)
}

// keepAside writes a batch the database refused (or that cannot be
// decoded) to the rejected directory, with a note saying why: never
// dropped, and out of the way of the batches behind it.
func (a *Agent) keepAside(seq uint64, data []byte, rows int, why error) {
	path := filepath.Join(a.cfg.rejectDir(), fmt.Sprintf("batch-%020d", seq))
	err := keepFile(path, data, rows, why)
	a.log.Error("rows refused by the database as bad data: set aside (cutoff probe --replay-rejected puts them in once fixed)",
		"seq", seq, "rows", rows, "sqlstate", store.SQLState(why), "why", why, "kept", path, "keep_err", err)
}

func keepFile(path string, data []byte, rows int, why error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	if err := writeFile(path, data); err != nil {
		return err
	}
	return writeFile(path+".why", fmt.Appendf(nil, "%d rows refused: %v\n", rows, why))
}

// Rejected is what ReplayRejected did.
type Rejected struct {
	Files    int          // batch files found
	Stored   store.Counts // rows the database took as new
	Kept     int          // files still there (rows still refused, or undecodable)
	KeptRows int
}

// ReplayRejected puts the batches an agent with this spool directory set
// aside (DIR/rejected) into the database. A file whose rows all go in is
// removed; rows the database still refuses stay in their file, alone,
// with the reason beside it. Rows already stored are skipped, so running
// it twice is harmless. It stops at the first error that is not about
// the rows (the database away, a permission missing).
func ReplayRejected(ctx context.Context, db, spoolDir string, log *slog.Logger) (Rejected, error) {
	var r Rejected
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg := Config{Spool: spoolDir}
	entries, err := os.ReadDir(cfg.rejectDir())
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); strings.HasPrefix(n, "batch-") && !strings.Contains(n, ".") {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	r.Files = len(names)
	if len(names) == 0 {
		return r, nil
	}
	st, err := store.Open(ctx, db)
	if err != nil {
		return r, err
	}
	defer st.Close()
	for i, name := range names {
		path := filepath.Join(cfg.rejectDir(), name)
		data, err := os.ReadFile(path)
		if err != nil {
			return r, err
		}
		b, err := decodeBatch(data)
		if err != nil {
			log.Error("cannot decode a rejected batch; left in place", "file", path, "err", err)
			r.Kept++
			continue
		}
		bad, why, err := ingestSplit(ctx, st, *b, &r.Stored)
		if err != nil {
			r.Kept += len(names) - i
			return r, fmt.Errorf("replay %s: %w", path, err)
		}
		if bad.Len() == 0 {
			os.Remove(path + ".why")
			if err := os.Remove(path); err != nil {
				return r, err
			}
			log.Info("rejected batch stored", "file", path, "rows", b.Len())
			continue
		}
		r.Kept++
		r.KeptRows += bad.Len()
		data, err = encodeBatch(&bad)
		if err == nil {
			err = keepFile(path, data, bad.Len(), why)
		}
		if err != nil {
			return r, fmt.Errorf("rewrite %s: %w", path, err)
		}
		log.Warn("rows still refused; kept", "file", path, "rows", bad.Len(), "stored", b.Len()-bad.Len(), "sqlstate", store.SQLState(why), "why", why)
	}
	return r, nil
}
