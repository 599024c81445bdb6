// Package labdb registers a lab's simulated country in cutoff's database,
// as an operator would register a real one: its address space, its DNS
// servers, the control targets, and a census from a vantage. The demo,
// `cutoff lab seed` and end-to-end tests use it.
package labdb

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/prober/census"
	"github.com/cutoffnet/cutoff/prober/lab"
	"github.com/cutoffnet/cutoff/store"
)

// Seed imports the lab's country (its networks as one CIDR list source),
// every control target (ICMP, TCP and DNS) and the DNS servers of the
// country's networks. Seeding twice changes nothing.
func Seed(ctx context.Context, l *lab.Lab, st *store.Store) error {
	c := l.Country()
	imp := store.Import{Country: c.Code, Name: c.Name, Source: "lab", Origin: "cutoff lab " + strings.TrimSuffix(l.Namespace(""), "-")}
	for _, p := range c.Prefixes {
		imp.Prefixes = append(imp.Prefixes, store.Prefix{Prefix: p, Registry: ""})
	}
	if _, err := st.ImportPrefixes(ctx, imp); err != nil {
		return fmt.Errorf("seed lab: %w", err)
	}
	for _, t := range l.ControlTargets() {
		if _, err := st.AddTarget(ctx, storeTarget(t, "")); err != nil {
			return fmt.Errorf("seed lab: control target %s: %w", t, err)
		}
	}
	for _, t := range l.Responsive(prober.KindDNS) {
		if _, err := st.AddTarget(ctx, storeTarget(t, c.Code)); err != nil {
			return fmt.Errorf("seed lab: dns server %s: %w", t, err)
		}
	}
	return nil
}

func storeTarget(t prober.Target, country string) store.Target {
	return store.Target{Kind: t.Kind.String(), Addr: t.Addr, Port: t.Port, Qname: t.Qname,
		Country: country, Control: country == ""}
}

// Census runs a census of the lab's country from a vantage, with the real
// engines, and stores it. ports are the TCP ports tried on every address.
func Census(ctx context.Context, l *lab.Lab, st *store.Store, vantage string, ports []uint16, timeout time.Duration) (store.CensusStats, error) {
	c := l.Country()
	blocks, err := st.CensusBlocks(ctx, c.Code)
	if err != nil {
		return store.CensusStats{}, err
	}
	if c.AnyIP.IsValid() {
		// The benchmark range answers on every address: a census of it
		// is a sweep of no interest to the scheduler.
		kept := blocks[:0]
		for _, b := range blocks {
			if !c.AnyIP.Overlaps(b) {
				kept = append(kept, b)
			}
		}
		blocks = kept
	}
	base := prober.Config{Policy: prober.Policy{Allow: []netip.Prefix{prober.Lab}}, Timeout: timeout, Limiter: prober.NewLimiter(20000)}
	var probers map[prober.Kind]prober.Prober
	var closers []func() error
	err = l.Do(vantage, func() error {
		icmp, err := prober.NewICMP(prober.ICMPConfig{Config: base})
		if err != nil {
			return err
		}
		tcp, err := prober.NewTCP(prober.TCPConfig{Config: base})
		if err != nil {
			icmp.Close()
			return err
		}
		probers = map[prober.Kind]prober.Prober{prober.KindICMP: icmp, prober.KindTCP: tcp}
		closers = []func() error{icmp.Close, tcp.Close}
		return nil
	})
	if err != nil {
		return store.CensusStats{}, fmt.Errorf("lab census: engines in %s: %w", vantage, err)
	}
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	res, err := census.Run(ctx, c.Code, blocks, probers, census.Config{Ports: ports})
	if err != nil {
		return store.CensusStats{}, fmt.Errorf("lab census: %w", err)
	}
	return st.SaveCensus(ctx, res)
}

// Recorder stores a scenario run's ground truth in lab_truth.
type Recorder struct{ Store *store.Store }

// Record implements lab.Recorder.
func (r Recorder) Record(ctx context.Context, t lab.Truth) error {
	return r.Store.RecordLabTruth(ctx, store.LabTruth{
		RunID: t.RunID, Seq: t.Seq, Scenario: t.Scenario, Country: t.Country, Target: t.Target,
		Fault: t.Fault, Detail: t.Detail, Prefixes: t.Prefixes, Line: t.Line,
		StartedAt: t.StartedAt, EndedAt: t.EndedAt, DoneAt: t.DoneAt,
		StoryStart: t.StoryStart, StoryEnd: t.StoryEnd,
	})
}
