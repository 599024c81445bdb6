package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"syscall"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/prober/sched/simnet"
	"github.com/cutoffnet/cutoff/store"
)

// Scale measures the scheduler's memory and CPU per tracked block against
// simnet, the in-memory transport (no packet is sent): Blocks /24s of
// eight mostly-answering hosts, one round to reach the steady state, then
// Rounds more, timed. The method is prober/sched's BenchmarkMemory and
// BenchmarkRound: heap after GC with the scheduler alive, minus before it
// was built; CPU (this process's user+sys) per block per round.
type Scale struct {
	Blocks int           // default 1,000,000
	Rounds int           // timed rounds after the first (default 2)
	Round  time.Duration // virtual round length (default 11 min)
	Log    *slog.Logger
}

// ScaleReport holds the figures.
type ScaleReport struct {
	Blocks, Rounds int
	// Heap is the heap the scheduler holds after its first round.
	Heap uint64
	// CPU and Wall are for the timed rounds, all blocks.
	CPU, Wall time.Duration
	// Probes and Verdicts during the timed rounds.
	Probes, Verdicts int64
}

// BytesPerBlock is the scheduler's heap per tracked block.
func (r *ScaleReport) BytesPerBlock() float64 { return float64(r.Heap) / float64(r.Blocks) }

// CPUPerBlockRound is the CPU time one block costs per round.
func (r *ScaleReport) CPUPerBlockRound() time.Duration {
	return r.CPU / time.Duration(max(1, r.Blocks*r.Rounds))
}

// WallPerBlockRound is the wall time one block costs per round.
func (r *ScaleReport) WallPerBlockRound() time.Duration {
	return r.Wall / time.Duration(max(1, r.Blocks*r.Rounds))
}

// scaleEpoch is the virtual clock's start: any fixed time works.
var scaleEpoch = time.Date(2014, 12, 22, 0, 0, 0, 0, time.UTC)

// Run builds the world and the scheduler and measures. ctx bounds it.
func (s Scale) Run(ctx context.Context) (*ScaleReport, error) {
	if s.Blocks <= 0 {
		s.Blocks = 1_000_000
	}
	if s.Blocks > 1<<20 {
		return nil, fmt.Errorf("scale: at most %d blocks (240.0.0.0/4 holds that many /24s)", 1<<20)
	}
	if s.Rounds <= 0 {
		s.Rounds = 2
	}
	if s.Round <= 0 {
		s.Round = 11 * time.Minute
	}
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.Info("building the in-memory world", "blocks", s.Blocks)
	clk, net, plan := world(s.Blocks)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	sink := &tally{}
	sc, err := sched.New(plan, map[prober.Kind]prober.Prober{prober.KindICMP: net}, sink, sched.Config{Now: clk.Now, Round: s.Round, Seed: 1})
	if err != nil {
		return nil, err
	}
	log.Info("first round (steady state)", "round", s.Round)
	simnet.Run(ctx, clk, sc, clk.Now().Add(s.Round))
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("scale: %w", err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	rep := &ScaleReport{Blocks: s.Blocks, Rounds: s.Rounds}
	if after.HeapAlloc > before.HeapAlloc {
		rep.Heap = after.HeapAlloc - before.HeapAlloc
	}
	if sink.verdicts < int64(s.Blocks)*9/10 {
		return nil, fmt.Errorf("scale: only %d verdicts in a round of %d blocks", sink.verdicts, s.Blocks)
	}
	start, cpu0 := time.Now(), cpuTime()
	t0 := *sink
	for i := range s.Rounds {
		log.Info("timed round", "round", i+1, "of", s.Rounds)
		simnet.Run(ctx, clk, sc, clk.Now().Add(s.Round))
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("scale: %w", err)
		}
	}
	rep.CPU, rep.Wall = cpuTime()-cpu0, time.Since(start)
	rep.Probes, rep.Verdicts = sink.results-t0.results, sink.verdicts-t0.verdicts
	runtime.KeepAlive(sc)
	runtime.KeepAlive(plan)
	return rep, nil
}

// Write prints the figures.
func (r *ScaleReport) Write(w io.Writer) {
	fmt.Fprintf(w, "Scheduler on the in-memory transport: %d blocks, %d timed rounds after a first one.\n", r.Blocks, r.Rounds)
	fmt.Fprintf(w, "  memory       %.0f bytes per block (%.1f MiB heap held by the scheduler; target <= 256)\n",
		r.BytesPerBlock(), float64(r.Heap)/(1<<20))
	fmt.Fprintf(w, "  cpu          %.2f µs per block per round (user+sys; %.1f s for %d block-rounds)\n",
		float64(r.CPUPerBlockRound())/float64(time.Microsecond), r.CPU.Seconds(), r.Blocks*r.Rounds)
	fmt.Fprintf(w, "  wall         %.2f µs per block per round\n", float64(r.WallPerBlockRound())/float64(time.Microsecond))
	fmt.Fprintf(w, "  probes       %.2f per block per round; %d verdicts\n",
		float64(r.Probes)/float64(max(1, r.Blocks*r.Rounds)), r.Verdicts)
}

// tally is a sink that only counts, as a fast agent would hand off.
type tally struct{ results, verdicts int64 }

func (t *tally) Result(sched.Result)   { t.results++ }
func (t *tally) Verdict(sched.Verdict) { t.verdicts++ }

// world models n /24s of eight mostly-answering hosts each, numbered
// through 240.0.0.0/4 (reserved space: these addresses exist only in
// simnet's memory), one network per 256 blocks, one country.
func world(n int) (*simnet.Clock, *simnet.Net, *store.Plan) {
	clk := simnet.NewClock(scaleEpoch)
	net := simnet.New(simnet.Options{Clock: clk, Seed: 1})
	plan := &store.Plan{Blocks: make([]store.PlanBlock, n)}
	hosts := []uint8{1, 9, 17, 33, 65, 100, 129, 200}
	for i := range n {
		a := uint32(240)<<24 | uint32(i)<<8
		b4 := [4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), 0}
		p := netip.PrefixFrom(netip.AddrFrom4(b4), 24)
		net.Add(p, simnet.Block{Hosts: hosts, Avail: 0.9})
		b := store.PlanBlock{
			Block: p, Network: netip.PrefixFrom(p.Addr(), 16).Masked(), Country: "AA", Availability: 0.9,
			Hosts: make([]store.PlanHost, len(hosts)),
		}
		for j, h := range hosts {
			b4[3] = h
			b.Hosts[j] = store.PlanHost{Addr: netip.AddrFrom4(b4), Probes: 3, Replies: 3, Answered: true}
		}
		plan.Blocks[i] = b
	}
	return clk, net, plan
}

// cpuTime is this process's user plus system time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
