package agent

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

// The pipe carries results and verdicts into the database through the
// spool, each exactly once, and leaves the spool empty once drained.
func TestPipe(t *testing.T) {
	t.Parallel()
	url := pgtest.URL(t)
	cfg := Defaults()
	cfg.DB, cfg.Vantage, cfg.Spool, cfg.Flush = url, "pipe", t.TempDir(), 20*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := NewPipe(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	base := time.Now().UTC().Truncate(time.Hour)
	const n = 5000
	blk := netip.MustParsePrefix("198.19.0.0/24")
	for i := range n {
		a := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
		p.Result(sched.Result{Result: prober.Result{Target: prober.Target{Kind: prober.KindICMP, Addr: a},
			Sent: base.Add(time.Duration(i) * time.Millisecond), Outcome: prober.Reply, RTT: time.Millisecond, Responder: a}, Round: 1})
		if i%1000 == 0 {
			time.Sleep(30 * time.Millisecond) // let several flushes happen
		}
	}
	p.Verdict(sched.Verdict{Unit: blk, Blocks: []netip.Prefix{blk}, Round: 1, Start: base, Time: base.Add(time.Second),
		Belief: 0.99, State: sched.Up, Probes: 1, Replies: 1})
	if err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Results != n || s.Ingested != n || s.Pending != 0 {
		t.Errorf("stats %+v, want %d results handed, %d ingested, none pending", s, n, n)
	}
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var results, verdicts int
	if err := st.Pool().QueryRow(ctx, `SELECT (SELECT count(*) FROM probe_results WHERE vantage = 'pipe'),
		(SELECT count(*) FROM observations WHERE vantage = 'pipe')`).Scan(&results, &verdicts); err != nil {
		t.Fatal(err)
	}
	if results != n || verdicts != 1 {
		t.Errorf("database holds %d results and %d verdicts, want %d and 1", results, verdicts, n)
	}
	if err := p.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
