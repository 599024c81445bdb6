package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/sched"
	"github.com/cutoffnet/cutoff/store"
)

// sweep probes every host address of every planned block once (ICMP), and
// every service and control target, instead of the scheduler's adaptive
// visits: a complete snapshot, with a reply from every responsive host and
// a timeout from every silent one. Each block's verdict is up when any of
// its hosts answered and down otherwise.
func (a *Agent) sweep(ctx context.Context, plan *store.Plan, probers map[prober.Kind]prober.Prober) error {
	start := time.Now()
	round := start.UnixNano() / int64(a.cfg.Round)
	type tally struct {
		mu             sync.Mutex
		probes, answer int
		first          time.Time
	}
	blocks := map[netip.Prefix]*tally{}
	var wg sync.WaitGroup
	var refused int
	send := func(t prober.Target, unit netip.Prefix, control bool) error {
		p := probers[t.Kind]
		if p == nil {
			return nil
		}
		tl := blocks[unit]
		wg.Add(1)
		err := p.Probe(ctx, t, func(r prober.Result) {
			defer wg.Done()
			a.col.Result(sched.Result{Result: r, Round: round, Unit: unit, Control: control})
			if tl == nil {
				return
			}
			tl.mu.Lock()
			tl.probes++
			if r.Outcome.Reached() {
				tl.answer++
			}
			if tl.first.IsZero() || r.Sent.Before(tl.first) {
				tl.first = r.Sent
			}
			tl.mu.Unlock()
		})
		if err != nil {
			wg.Done()
			if errors.Is(err, prober.ErrRefused) {
				refused++
				return nil
			}
			return err
		}
		return nil
	}
	for _, b := range plan.Blocks {
		blocks[b.Block] = &tally{}
	}
	var err error
	for _, c := range plan.Controls {
		if err = send(target(c), netip.Prefix{}, true); err != nil {
			break
		}
	}
	for _, s := range plan.Services {
		if err != nil {
			break
		}
		err = send(target(s), s.Block, false)
	}
	for _, b := range plan.Blocks {
		if err != nil {
			break
		}
		for addr := range hosts(b.Block) {
			if err = send(prober.Target{Kind: prober.KindICMP, Addr: addr}, b.Block, false); err != nil {
				break
			}
		}
	}
	wg.Wait()
	if refused > 0 {
		a.log.Warn("sweep: targets refused by the address policy", "refused", refused)
	}
	done := time.Now()
	for _, b := range plan.Blocks {
		tl := blocks[b.Block]
		if tl.probes == 0 {
			continue
		}
		v := sched.Verdict{Unit: b.Block, Blocks: []netip.Prefix{b.Block}, Round: round, Why: sched.Regular,
			Start: tl.first, Time: done, Probes: tl.probes, Replies: tl.answer, Used: tl.probes}
		if tl.answer > 0 {
			v.State, v.Belief = sched.Up, 0.99
		} else {
			v.State, v.Belief = sched.Down, 0.01
		}
		a.col.Verdict(v)
	}
	a.log.Info("sweep done", "blocks", len(plan.Blocks), "took", time.Since(start).Round(time.Millisecond))
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	return ctx.Err()
}

func target(t store.PlanTarget) prober.Target {
	k, _ := prober.ParseKind(t.Kind)
	return prober.Target{Kind: k, Addr: t.Addr, Port: t.Port, Qname: t.Qname}
}

// hosts yields the host addresses of a block: a /24 without its network
// and broadcast addresses (probing those asks every host at once).
func hosts(p netip.Prefix) func(func(netip.Addr) bool) {
	return func(yield func(netip.Addr) bool) {
		first := p.Masked().Addr()
		size := 1 << (32 - p.Bits())
		a := first
		for i := 0; i < size; i, a = i+1, a.Next() {
			if size >= 4 && (i == 0 || i == size-1) {
				continue
			}
			if !yield(a) {
				return
			}
		}
	}
}
