package census_test

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/census"
	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/prober/lab/labtest"
	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/store"
	"github.com/cutoffnet/cutoff/store/pgtest"
)

// labSink keeps a round's verdicts by block and its control results.
type labSink struct {
	mu       sync.Mutex
	verdicts map[netip.Prefix]sched.Verdict
	controls []prober.Result
	results  int
}

func (s *labSink) Result(r sched.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results++
	if r.Control {
		s.controls = append(s.controls, r.Result)
	}
}

func (s *labSink) Verdict(v sched.Verdict) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range v.Blocks {
		if old, ok := s.verdicts[b]; !ok || old.Why != sched.Regular {
			s.verdicts[b] = v
		}
	}
}

// TestLabCensusAndRounds is the check, on real sockets in the lab:
// a census from vp1 finds each network's responsive hosts; a round judges
// every network up (the one that filters ICMP on its TCP answers); after
// the border is cut a round judges every network down while the control
// targets still answer.
func TestLabCensusAndRounds(t *testing.T) {
	l := labtest.Up(t, lab.Default())
	ctx := ctxT(t)
	st := pgtest.New(t)
	country := l.Country()
	imp := store.Import{Country: country.Code, Name: country.Name, Source: "lab"}
	for _, nw := range country.Networks {
		imp.Prefixes = append(imp.Prefixes, store.Prefix{Prefix: nw.Prefix, Registry: "lab"})
	}
	if _, err := st.ImportPrefixes(ctx, imp); err != nil {
		t.Fatal(err)
	}
	for _, c := range l.ControlTargets() {
		if c.Kind != prober.KindICMP {
			continue
		}
		if _, err := st.AddTarget(ctx, store.Target{Kind: "icmp", Addr: c.Addr, Control: true}); err != nil {
			t.Fatal(err)
		}
	}

	cfg := prober.Config{Policy: prober.Policy{Allow: []netip.Prefix{prober.Lab}}, Timeout: 500 * time.Millisecond,
		Limiter: prober.NewLimiter(5000)}
	var icmp *prober.ICMP
	var tcp *prober.TCP
	err := l.Do("vp1", func() (err error) {
		if icmp, err = prober.NewICMP(prober.ICMPConfig{Config: cfg}); err != nil {
			return err
		}
		tcp, err = prober.NewTCP(prober.TCPConfig{Config: cfg})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer icmp.Close()
	defer tcp.Close()
	probers := map[prober.Kind]prober.Prober{prober.KindICMP: icmp, prober.KindTCP: tcp}

	blocks, err := st.CensusBlocks(ctx, country.Code)
	if err != nil {
		t.Fatal(err)
	}
	c, err := census.Run(ctx, country.Code, blocks, probers, census.Config{Rounds: 2, Ports: []uint16{80, 443}, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SaveCensus(ctx, c); err != nil {
		t.Fatal(err)
	}
	for _, nw := range country.Networks {
		icmpHosts, tcpHosts := 0, 0
		for _, h := range nw.Hosts {
			if h.ICMP && !nw.FilterICMP {
				icmpHosts++
			}
			if len(h.TCPPorts) > 0 {
				tcpHosts++
			}
		}
		var ever int
		var avail *float32
		if err := st.Pool().QueryRow(ctx, `SELECT ever_responsive, availability FROM blocks WHERE block = $1`, nw.Prefix).Scan(&ever, &avail); err != nil {
			t.Fatal(err)
		}
		icmpTargets := value[int](t, st, `SELECT count(*) FROM targets WHERE block = $1 AND kind = 'icmp'`, nw.Prefix)
		if icmpTargets != icmpHosts || ever < max(icmpHosts, tcpHosts) {
			t.Errorf("%s: census found %d ICMP targets and E=%d; the lab has %d echo responders and %d TCP hosts",
				nw.Name, icmpTargets, ever, icmpHosts, tcpHosts)
		}
		if icmpHosts > 0 && (avail == nil || *avail < 0.99) {
			t.Errorf("%s: A %v, want 1 for the lab's always-on hosts", nw.Name, avail)
		}
	}

	plan, err := st.LoadPlan(ctx, country.Code)
	if err != nil {
		t.Fatal(err)
	}
	round := func() *labSink {
		t.Helper()
		sink := &labSink{verdicts: map[netip.Prefix]sched.Verdict{}}
		s, err := sched.New(plan, probers, sink, sched.Config{Round: 2 * time.Second, Timeout: cfg.Timeout, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Results != st.Sent || int64(sink.results) != st.Sent {
			t.Errorf("sent %d probes, %d results, sink got %d", st.Sent, st.Results, sink.results)
		}
		return sink
	}

	up := round()
	for _, nw := range country.Networks {
		v, ok := up.verdicts[nw.Prefix]
		if !ok || v.State != sched.Up {
			t.Errorf("%s before the cut: %+v, want up", nw.Name, v)
		}
		if nw.FilterICMP && !v.Evidence.Has(prober.KindTCP) {
			t.Errorf("%s filters ICMP: judged on %v, want TCP", nw.Name, v.Evidence)
		}
	}

	if err := l.Cut(ctx, "border"); err != nil {
		t.Fatal(err)
	}
	defer l.Restore(context.Background(), "border")
	down := round()
	for _, nw := range country.Networks {
		if v := down.verdicts[nw.Prefix]; v.State != sched.Down {
			t.Errorf("%s after the border cut: %v (%d probes, evidence %v), want down", nw.Name, v.State, v.Probes, v.Evidence)
		}
	}
	answered := 0
	for _, r := range down.controls {
		if r.Outcome == prober.Reply {
			answered++
		}
	}
	if answered == 0 || answered < len(down.controls) {
		t.Errorf("control targets answered %d of %d probes during the cut, want all", answered, len(down.controls))
	}
}
