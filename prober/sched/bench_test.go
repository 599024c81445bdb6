package sched

import (
	"context"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched/simnet"
	"github.com/cutoffnet/cutoff/store"
)

// benchBlocks is the scale the scheduler must hold: a million /24s.
const benchBlocks = 1_000_000

// bigWorld models n /24s of eight always-on-ish hosts each, numbered
// through 240.0.0.0/4 (reserved space: these addresses exist only in
// simnet's memory), in one network per 256 blocks and one country.
func bigWorld(n int) (*simnet.Clock, *simnet.Net, *store.Plan) {
	clk := simnet.NewClock(epoch)
	net := simnet.New(simnet.Options{Clock: clk, Seed: 1})
	plan := &store.Plan{Blocks: make([]store.PlanBlock, n)}
	hosts := []uint8{1, 9, 17, 33, 65, 100, 129, 200}
	for i := range n {
		a := uint32(240)<<24 | uint32(i)<<8
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), 0}), 24)
		net.Add(p, simnet.Block{Hosts: hosts, Avail: 0.9})
		b := store.PlanBlock{
			Block: p, Network: netip.PrefixFrom(p.Addr(), 16).Masked(), Country: "AA", Availability: 0.9,
			Hosts: make([]store.PlanHost, len(hosts)),
		}
		for j, h := range hosts {
			b.Hosts[j] = store.PlanHost{Addr: netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), h}), Probes: 3, Replies: 3, Answered: true}
		}
		plan.Blocks[i] = b
	}
	return clk, net, plan
}

// counter is a Sink that only counts, as a fast agent would hand off.
type counter struct{ results, verdicts int }

func (c *counter) Result(Result)   { c.results++ }
func (c *counter) Verdict(Verdict) { c.verdicts++ }

// BenchmarkMemory measures the scheduler's heap per tracked block with a
// million blocks, after one full round against the in-memory network:
// HeapAlloc after GC with the scheduler alive, minus before it was built.
//
//	go test -run XXX -bench Memory -benchtime 1x ./prober/sched/
func BenchmarkMemory(b *testing.B) {
	clk, net, plan := bigWorld(benchBlocks)
	probers := map[prober.Kind]prober.Prober{prober.KindICMP: net}
	var perBlock float64
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		sink := &counter{}
		s, err := New(plan, probers, sink, Config{Now: clk.Now, Seed: 1})
		if err != nil {
			b.Fatal(err)
		}
		simnet.Run(context.Background(), clk, s, clk.Now().Add(11*time.Minute))
		settle(clk, s)
		runtime.GC()
		runtime.ReadMemStats(&after)
		perBlock = float64(after.HeapAlloc-before.HeapAlloc) / benchBlocks
		if sink.verdicts < benchBlocks*9/10 {
			b.Fatalf("only %d verdicts in a round of %d blocks", sink.verdicts, benchBlocks)
		}
		runtime.KeepAlive(s)
	}
	runtime.KeepAlive(plan)
	b.ReportMetric(perBlock, "bytes/block")
	if perBlock > 256 {
		b.Errorf("%.0f bytes per block, over the 256 budget", perBlock)
	}
}

// BenchmarkRound measures the CPU one round of a million blocks takes
// (each op is one round): against simnet, which looks every probe up in a
// million-entry map, and against echo, a transport that answers every
// probe after 20 ms and so leaves mostly the scheduler's own work (and
// the virtual clock's).
//
//	go test -run XXX -bench Round -benchtime 3x ./prober/sched/
func BenchmarkRound(b *testing.B) {
	for _, transport := range []string{"simnet", "echo"} {
		b.Run(transport, func(b *testing.B) {
			clk, net, plan := bigWorld(benchBlocks)
			var p prober.Prober = net
			if transport == "echo" {
				p = echo{clk}
			}
			sink := &counter{}
			s, err := New(plan, map[prober.Kind]prober.Prober{prober.KindICMP: p}, sink, Config{Now: clk.Now, Seed: 1})
			if err != nil {
				b.Fatal(err)
			}
			round := 11 * time.Minute
			// Warm up one round so every unit has its steady state.
			simnet.Run(context.Background(), clk, s, clk.Now().Add(round))
			start := *sink
			b.ResetTimer()
			for range b.N {
				simnet.Run(context.Background(), clk, s, clk.Now().Add(round))
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchBlocks, "ns/block-round")
			b.ReportMetric(float64(sink.results-start.results)/float64(b.N)/benchBlocks, "probes/block-round")
		})
	}
}

// echo answers every probe after 20 ms of virtual time.
type echo struct{ clk *simnet.Clock }

func (e echo) Probe(_ context.Context, t prober.Target, done func(prober.Result)) error {
	r := prober.Result{Target: t, Sent: e.clk.Now(), RTT: 20 * time.Millisecond, Outcome: prober.Reply, Responder: t.Addr}
	e.clk.AfterFunc(r.RTT, func() { done(r) })
	return nil
}

func settle(clk *simnet.Clock, s *Scheduler) {
	s.stopping = true
	for s.drain(context.Background()); s.inflight > 0; s.drain(context.Background()) {
		t, _ := clk.Next()
		clk.AdvanceTo(t)
	}
}
