package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/prober/spool"
	"github.com/cutoffnet/cutoff/store"
)

// Version is reported with the vantage's heartbeat.
var Version = "dev"

// Agent runs one vantage.
type Agent struct {
	cfg Config
	log *slog.Logger
	reg *prometheus.Registry

	st   *store.Store
	sp   *spool.Spool
	m    *metrics
	col  *collector
	icmp *prober.ICMP

	// now is the clock measured against the database's (tests skew it);
	// nil is time.Now.
	now func() time.Time

	collected atomic.Int64 // probe results handed over by the scheduler
	ingested  atomic.Int64 // results the database took (new rows)
	dbErrors  atomic.Int64
	metricsAt atomic.Value // string: where /metrics listens, once it does
}

// Stats are the agent's own counters.
type Stats struct {
	// Results is the number of probe results the scheduler produced:
	// every probe sent and completed. Once the spool has drained, the
	// database holds exactly this many results from this run.
	Results int64
	// Ingested is how many of them the database took as new rows.
	Ingested int64
	// Spooled is how many of them were written into the spool: those
	// survive the agent being killed. The others are in memory (for less
	// than a millisecond, unless the spool is full) or Lost.
	Spooled int64
	// Lost is how many results were dropped, never spooled.
	Lost int64
	// Pending is how many batches wait in the spool.
	Pending uint64
}

// Stats reports the agent's counters.
func (a *Agent) Stats() Stats {
	s := Stats{Results: a.collected.Load(), Ingested: a.ingested.Load()}
	if a.col != nil {
		s.Spooled, s.Lost = a.col.written.Load(), a.col.lost.Load()
	}
	if a.sp != nil {
		s.Pending = a.sp.Pending()
	}
	return s
}

// MetricsAddr is where /metrics listens (useful with port 0), or "".
func (a *Agent) MetricsAddr() string {
	s, _ := a.metricsAt.Load().(string)
	return s
}

// New prepares an agent. reg receives its metrics (and serves them when
// cfg.Metrics is set); nil makes a private registry.
func New(cfg Config, log *slog.Logger, reg *prometheus.Registry) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	return &Agent{cfg: cfg, log: log.With("vantage", cfg.Vantage), reg: reg}, nil
}

// Run probes until ctx ends (or, with Once, for one round), then flushes
// and drains what it can into the database and returns. A nil error means
// every result is in the database or safely in the spool.
func (a *Agent) Run(ctx context.Context) error {
	cfg := a.cfg
	sp, err := spool.Open(cfg.spoolDir(), spool.Options{
		MaxBytes: cfg.SpoolMax,
		Logger:   a.log,
	})
	if err != nil {
		return fmt.Errorf("open spool %s: %w", cfg.spoolDir(), err)
	}
	defer sp.Close()
	a.sp = sp
	if n := sp.Pending(); n > 0 {
		a.log.Info("spool holds batches from before; replaying them", "batches", n, "oldest", sp.Age().Round(time.Second))
	}

	st, err := store.Dial(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer st.Close()
	a.st = st

	probers, err := a.engines()
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range probers {
			if c, ok := p.(interface{ Close() error }); ok {
				c.Close()
			}
		}
	}()
	var icmpStats func() prober.ICMPStats
	if a.icmp != nil {
		icmpStats = a.icmp.Stats
	}
	a.m = newMetrics(a.reg, sp, icmpStats)
	stopMetrics, err := a.serveMetrics()
	if err != nil {
		return err
	}
	defer stopMetrics()

	// The writer and the heartbeat outlive ctx by the drain time, so that
	// what was collected can still reach the database on the way out.
	bg, stopBG := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBG()
	var wg sync.WaitGroup
	wg.Go(func() { a.write(bg) })

	a.col = newCollector(cfg.Vantage, sp, a.m, a.log, &a.collected)
	wg.Go(func() { a.col.run(bg, cfg.Flush) })

	beat := make(chan struct{})
	wg.Go(func() { a.heartbeats(bg, beat) })

	err = a.probe(ctx, probers)
	if cfg.Once || cfg.Sweep {
		a.col.finishRound()
	}

	// Stopping: the scheduler has waited for its probes in flight; put
	// the last results in the spool, then give the writer time to drain
	// it (and the collector to write what a full spool held back).
	a.col.flush()
	drain := cfg.Drain
	if (cfg.Once || cfg.Sweep) && drain < time.Minute {
		drain = time.Minute // cron runs: worth waiting for the database
	}
	deadline := time.Now().Add(drain)
	for (sp.Pending() > 0 || a.col.holding()) && time.Now().Before(deadline) && a.dbReachable() {
		time.Sleep(20 * time.Millisecond)
	}
	close(beat)
	a.beat(bg) // one last heartbeat with the final counts
	stopBG()
	wg.Wait()

	s := a.Stats()
	a.log.Info("stopped", "results", s.Results, "spooled", s.Spooled, "ingested", s.Ingested, "spooled_batches", s.Pending)
	if err != nil && !errors.Is(err, context.Canceled) {
		return errors.Join(err, a.col.err())
	}
	// Results that are neither in the database nor durably in the spool
	// are lost: that is a failure, whatever the mode.
	if lerr := a.col.err(); lerr != nil {
		a.log.Error("results could not be made durable", "err", lerr)
		return fmt.Errorf("results lost: %w", lerr)
	}
	if (cfg.Once || cfg.Sweep) && s.Pending > 0 {
		return fmt.Errorf("the database did not take every batch (unreachable, or refusing them: see the log): %d batches stay in %s for the next run", s.Pending, cfg.spoolDir())
	}
	return nil
}

// dbReachable is false once writes have failed for a while: no point
// waiting out the drain time for a database that is down.
func (a *Agent) dbReachable() bool { return a.dbErrors.Load() < 3 }

// engines builds the probe engines: one limiter caps all of them.
func (a *Agent) engines() (map[prober.Kind]prober.Prober, error) {
	cfg := a.cfg
	allow, _ := cfg.prefixes(cfg.AllowReserved)
	optOut, _ := cfg.prefixes(cfg.OptOut)
	base := prober.Config{
		Policy:  prober.Policy{Allow: allow, OptOut: optOut},
		Limiter: prober.NewLimiter(cfg.Rate),
		Timeout: cfg.Timeout,
		Log:     a.log,
	}
	mode := map[string]prober.ICMPMode{"auto": prober.ICMPAuto, "raw": prober.ICMPRaw, "ping": prober.ICMPPing}[cfg.ICMPMode]
	icmp, err := prober.NewICMP(prober.ICMPConfig{Config: base, Mode: mode, Contact: cfg.Contact})
	if err != nil {
		return nil, fmt.Errorf("icmp: %w (give the binary CAP_NET_RAW: setcap cap_net_raw+ep $(which cutoff), or allow ping sockets: sysctl net.ipv4.ping_group_range)", err)
	}
	a.icmp = icmp
	a.log.Info("icmp engine ready", "socket", icmp.Mode())
	tcp, err := prober.NewTCP(prober.TCPConfig{Config: base})
	if err != nil {
		icmp.Close()
		return nil, fmt.Errorf("tcp: %w", err)
	}
	dns, err := prober.NewDNS(prober.DNSConfig{Config: base})
	if err != nil {
		icmp.Close()
		tcp.Close()
		return nil, fmt.Errorf("dns: %w", err)
	}
	return map[prober.Kind]prober.Prober{prober.KindICMP: icmp, prober.KindTCP: tcp, prober.KindDNS: dns}, nil
}

func (a *Agent) serveMetrics() (stop func(), err error) {
	if a.cfg.Metrics == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", a.cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	a.metricsAt.Store(ln.Addr().String())
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	a.log.Info("serving metrics", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}

// probe runs the scheduler, rebuilding it when the plan changes.
func (a *Agent) probe(ctx context.Context, probers map[prober.Kind]prober.Prober) error {
	plan, sum, err := a.plan(ctx)
	if err != nil {
		return err
	}
	scfg := sched.Config{Round: a.cfg.Round, Timeout: a.cfg.Timeout, Recheck: a.cfg.Recheck, Seed: a.cfg.Seed, Log: a.log}
	if c := a.cfg.TimeScale; c > 1 {
		// Compressed history: an hour's budgets pass in 1/c of an hour.
		scfg.Sample = time.Duration(float64(time.Minute) / c)
		scfg.Budget = 18 * c
		scfg.BlockCap = 60 * c
		scfg.MinInterval = min(time.Duration(float64(10*time.Second)/c), a.cfg.Recheck/2)
	}
	s, err := sched.New(plan, probers, a.col, scfg)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	st := s.Stats()
	a.log.Info("probing", "units", st.Units, "blocks", st.Blocks, "unmeasurable", st.Unmeasurable,
		"services", st.Services, "controls", st.Controls, "round", a.cfg.Round, "once", a.cfg.Once)
	if a.cfg.Sweep {
		return a.sweep(ctx, plan, probers)
	}
	if a.cfg.Once {
		return s.RunOnce(ctx)
	}
	for {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.Run(rctx) }()
		refresh := time.NewTicker(a.cfg.PlanRefresh)
		stats := time.NewTicker(5 * time.Second)
		var next *sched.Scheduler
	wait:
		for {
			select {
			case err := <-done:
				refresh.Stop()
				stats.Stop()
				cancel()
				return err
			case <-stats.C:
				ss := s.Stats()
				a.m.lag.Set(ss.Lag.Seconds())
				a.m.inFlight.Set(float64(ss.InFlight))
			case <-refresh.C:
				p, sum2, err := a.plan(ctx)
				if err != nil || sum2 == sum {
					continue
				}
				n, err := sched.New(p, probers, a.col, scfg)
				if err != nil {
					a.log.Error("refreshed plan refused by the scheduler; keeping the old one", "err", err)
					continue
				}
				a.log.Info("plan changed; switching", "blocks", n.Stats().Blocks)
				sum, next = sum2, n
				break wait
			}
		}
		refresh.Stop()
		stats.Stop()
		cancel()
		<-done
		next.Carry(s)
		s = next
	}
}

// plan loads the plan from the database and caches it on disk; when the
// database is away it uses the cache, and without one it waits.
func (a *Agent) plan(ctx context.Context) (*store.Plan, [32]byte, error) {
	var zero [32]byte
	for attempt := 0; ; attempt++ {
		p, err := a.st.LoadPlan(ctx, a.cfg.Countries...)
		if err == nil {
			var buf bytes.Buffer
			if err := gob.NewEncoder(&buf).Encode(p); err == nil {
				if err := writeFile(a.cfg.planPath(), buf.Bytes()); err != nil {
					a.log.Warn("cannot cache the plan", "err", err)
				}
				return p, sha256.Sum256(buf.Bytes()), nil
			}
			return p, zero, nil
		}
		if !store.IsConnError(err) {
			return nil, zero, fmt.Errorf("load plan: %w", err)
		}
		if b, rerr := os.ReadFile(a.cfg.planPath()); rerr == nil {
			var p store.Plan
			if derr := gob.NewDecoder(bytes.NewReader(b)).Decode(&p); derr == nil {
				a.log.Warn("database unreachable: probing with the cached plan", "err", err, "cache", a.cfg.planPath())
				return &p, sha256.Sum256(b), nil
			}
		}
		if attempt == 0 {
			a.log.Warn("database unreachable and no cached plan: waiting for it", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, zero, ctx.Err()
		case <-time.After(min(time.Duration(attempt+1)*time.Second, 15*time.Second)):
		}
	}
}

// heartbeats report the vantage every cfg.Heartbeat until stop closes.
func (a *Agent) heartbeats(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(a.cfg.Heartbeat)
	defer t.Stop()
	for {
		a.beat(ctx)
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// beat measures the clock and reports the vantage.
func (a *Agent) beat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	h := store.Heartbeat{Vantage: a.cfg.Vantage, Round: a.cfg.Round, Timeout: a.cfg.Timeout,
		SpoolBytes: a.sp.Bytes(), SpoolRecords: int64(a.sp.Pending()), ProbesSent: a.collected.Load(),
		Countries: a.cfg.Countries, Version: Version}
	if age := a.sp.Age(); age > 0 {
		h.SpoolOldest = time.Now().Add(-age)
	}
	h.Hostname, _ = os.Hostname()
	off, rtt, err := a.st.ClockOffset(ctx, a.now)
	if err != nil {
		a.log.Debug("clock offset not measured", "err", err)
	} else {
		h.ClockOffset = &off
		a.m.clock.Set(off.Seconds())
		if off.Abs() > time.Second {
			a.log.Warn("clock offset against the database is over 1 s: every interval this vantage reports is shifted by it; fix NTP",
				"offset", off.Round(time.Millisecond), "rtt", rtt.Round(time.Millisecond))
		}
	}
	if err := a.st.Beat(ctx, h); err != nil {
		a.log.Debug("heartbeat failed", "err", err)
	}
}

// writeFile writes through a temporary file and a rename.
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
