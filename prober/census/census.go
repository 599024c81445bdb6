// Package census finds which addresses of a country's blocks answer, so
// that the scheduler knows each block's ever-responsive addresses E(b) and
// their availability A(b).
//
// Blocks enter as prefixes (store.CensusBlocks); every host address of
// every block is probed once a round (ICMP echo, and a TCP connect to each
// configured port) through the prober.Probers given; the answers (echo
// replies, and completed TCP handshakes: open ports) leave as a
// store.Census for store.SaveCensus, which adds them to the history of
// earlier runs.
package census

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/store"
)

// Config tunes a census. The zero value works: one round, ICMP only.
type Config struct {
	// Rounds is how many times every address is probed (default 1). More
	// rounds, ideally far apart, estimate availability better.
	Rounds int
	// Interval is the least time between the starts of two rounds, so
	// they sample different moments (default 0: back to back).
	Interval time.Duration
	// Ports are the TCP ports probed on every address besides ICMP echo.
	Ports []uint16
	// OptOut names prefixes never to probe: networks whose operators
	// asked not to be measured. Their addresses are skipped, not handed to
	// the engines (whose policy should refuse them too), so the rest of a
	// partly opted-out block is still censused; a block with no address
	// left is left out of the census.
	OptOut []netip.Prefix
	// MaxInFlight bounds the probes awaiting an answer (default 4096): with
	// the engines' timeout it bounds the rate when nothing answers, and
	// the memory held by pending probes.
	MaxInFlight int
	// Seed fixes the probing order; 0 picks one at random.
	Seed uint64
	// Progress, when set, is called now and then with the probes done and
	// the total, from the census's own goroutine.
	Progress func(done, total int64)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Log gets operational messages; nil discards them.
	Log *slog.Logger
}

// hostKey names what answered.
type hostKey struct {
	kind prober.Kind
	addr netip.Addr
	port uint16
}

type tally struct {
	replies int
	last    time.Time
}

// Run probes every host address of blocks, round after round, and
// returns what answered. Blocks any of whose probes an engine refused
// (its policy forbids the space) are left out of the result, so they are
// not recorded as censused. Run returns ctx's error, and no census, if
// ctx ends first: a partial census would understate A(b).
func Run(ctx context.Context, country string, blocks []netip.Prefix, probers map[prober.Kind]prober.Prober, cfg Config) (store.Census, error) {
	if cfg.Rounds == 0 {
		cfg.Rounds = 1
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 4096
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	switch {
	case cfg.Rounds < 0 || cfg.MaxInFlight < 0 || cfg.Interval < 0:
		return store.Census{}, fmt.Errorf("census: rounds %d, in flight %d and interval %v must not be negative", cfg.Rounds, cfg.MaxInFlight, cfg.Interval)
	case probers[prober.KindICMP] == nil:
		return store.Census{}, errors.New("census: no ICMP engine")
	case len(cfg.Ports) > 0 && probers[prober.KindTCP] == nil:
		return store.Census{}, errors.New("census: TCP ports given but no TCP engine")
	}
	blocks = slices.Clone(blocks)
	for i, b := range blocks {
		if !b.Addr().Is4() || b.Bits() < 24 {
			return store.Census{}, fmt.Errorf("census: block %s is not an IPv4 /24 or longer", b)
		}
		blocks[i] = b.Masked()
	}
	slices.SortFunc(blocks, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	c := &run{
		cfg:     cfg,
		probers: probers,
		tallies: map[hostKey]*tally{},
		refused: make([]bool, len(blocks)),
		partly:  make([]bool, len(blocks)),
		sem:     make(chan struct{}, cfg.MaxInFlight),
		rng:     rand.New(rand.NewPCG(seed, seed^0xda942042e4dd58b5)),
	}
	perRound := int64(0)
	optedOut := 0
	for i, b := range blocks {
		for _, o := range cfg.OptOut {
			c.partly[i] = c.partly[i] || o.Overlaps(b)
		}
		n := probeable(b, cfg.OptOut)
		if n == 0 {
			// Nothing of it may be probed: leave it out like a
			// refused block, so it is not recorded as censused.
			c.refused[i] = true
			optedOut++
		}
		perRound += int64(n)
	}
	if optedOut > 0 {
		cfg.Log.Info("census leaves out blocks that are wholly opted out", "blocks", optedOut)
	}
	c.total = perRound * int64(cfg.Rounds) * int64(1+len(cfg.Ports))

	started := cfg.Now()
	for r := range cfg.Rounds {
		if r > 0 && cfg.Interval > 0 {
			wait := started.Add(time.Duration(r) * cfg.Interval).Sub(cfg.Now())
			if err := sleep(ctx, wait); err != nil {
				c.wait()
				return store.Census{}, err
			}
		}
		if err := c.round(ctx, blocks); err != nil {
			c.wait()
			return store.Census{}, err
		}
	}
	c.wait()
	if cfg.Progress != nil {
		cfg.Progress(c.done.Load(), c.total)
	}
	if err := ctx.Err(); err != nil {
		return store.Census{}, err
	}
	if n := c.errors.Load(); n > 0 {
		cfg.Log.Warn("census probes that failed locally (not counted as answers)", "probes", n)
	}

	out := store.Census{Country: country, Started: started, Rounds: cfg.Rounds, Ports: slices.Clone(cfg.Ports)}
	for i, b := range blocks {
		if c.refused[i] {
			if c.partly[i] {
				cfg.Log.Info("census left out a block that is opted out or was refused", "block", b)
			} else {
				cfg.Log.Warn("census left out a block the engines refused to probe", "block", b)
			}
			continue
		}
		out.Blocks = append(out.Blocks, b)
	}
	for k, t := range c.tallies {
		i, _ := slices.BinarySearchFunc(out.Blocks, k.addr, func(b netip.Prefix, a netip.Addr) int {
			if b.Contains(a) {
				return 0
			}
			return b.Addr().Compare(a)
		})
		if i >= len(out.Blocks) || !out.Blocks[i].Contains(k.addr) {
			continue // in a refused block
		}
		out.Hosts = append(out.Hosts, store.CensusHost{Kind: k.kind.String(), Addr: k.addr, Port: k.port, Replies: t.replies, LastReply: t.last})
	}
	slices.SortFunc(out.Hosts, func(x, y store.CensusHost) int {
		if c := x.Addr.Compare(y.Addr); c != 0 {
			return c
		}
		if c := cmp.Compare(x.Kind, y.Kind); c != 0 {
			return c
		}
		return cmp.Compare(x.Port, y.Port)
	})
	return out, nil
}

type run struct {
	cfg     Config
	probers map[prober.Kind]prober.Prober
	rng     *rand.Rand
	sem     chan struct{}

	mu      sync.Mutex
	tallies map[hostKey]*tally

	refused      []bool // by block
	partly       []bool // by block: some opt-out prefix overlaps it
	total        int64
	sent         int64
	done, errors atomic.Int64
}

// round probes every address once. It goes through the host numbers in a
// random order and, for each, through the blocks in a random order, so
// every block's probes are spread over the whole round instead of arriving
// as a burst.
func (c *run) round(ctx context.Context, blocks []netip.Prefix) error {
	hosts := c.rng.Perm(256)
	order := c.rng.Perm(len(blocks))
	for _, h := range hosts {
		for _, bi := range order {
			b := blocks[bi]
			if c.refused[bi] {
				continue
			}
			a, ok := hostAddr(b, h)
			if !ok || c.optedOut(bi, a) {
				continue
			}
			if err := c.probe(ctx, bi, prober.Target{Kind: prober.KindICMP, Addr: a}); err != nil {
				return err
			}
			for _, p := range c.cfg.Ports {
				if err := c.probe(ctx, bi, prober.Target{Kind: prober.KindTCP, Addr: a, Port: p}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (c *run) probe(ctx context.Context, bi int, t prober.Target) error {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	err := c.probers[t.Kind].Probe(ctx, t, c.record)
	if err != nil {
		<-c.sem
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, prober.ErrRefused) {
			c.refused[bi] = true
			c.cfg.Log.Warn("census probe refused", "target", t.String(), "err", err)
			c.done.Add(1)
			return nil
		}
		return fmt.Errorf("census probe %s: %w", t, err)
	}
	c.sent++
	if c.cfg.Progress != nil && c.sent%256 == 0 {
		c.cfg.Progress(c.done.Load(), c.total)
	}
	return nil
}

// OptedOut reports whether every address a census would probe in block b
// lies in one of the optOut prefixes, so that the block is left out.
func OptedOut(b netip.Prefix, optOut []netip.Prefix) bool {
	return probeable(b.Masked(), optOut) == 0
}

// probeable counts the addresses of b a census probes, less those opted
// out.
func probeable(b netip.Prefix, optOut []netip.Prefix) int {
	n := 0
	for _, h := range hostsOf(b) {
		a, _ := hostAddr(b, h)
		if !slices.ContainsFunc(optOut, func(o netip.Prefix) bool { return o.Contains(a) }) {
			n++
		}
	}
	return n
}

// optedOut reports whether a, an address of block bi, is opted out.
func (c *run) optedOut(bi int, a netip.Addr) bool {
	if !c.partly[bi] {
		return false
	}
	for _, o := range c.cfg.OptOut {
		if o.Contains(a) {
			return true
		}
	}
	return false
}

// record is every probe's done callback.
func (c *run) record(r prober.Result) {
	defer func() { <-c.sem }()
	c.done.Add(1)
	switch {
	case r.Outcome == prober.Error:
		c.errors.Add(1)
		return
	case r.Outcome != prober.Reply:
		// For TCP, only an open port makes a target: a reset shows the
		// address is there, but a firewall may send resets for a whole
		// network, which would turn every address into a "service".
		return
	}
	k := hostKey{kind: r.Target.Kind, addr: r.Target.Addr, port: r.Target.Port}
	at := r.Sent.Add(r.RTT)
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.tallies[k]
	if t == nil {
		t = &tally{}
		c.tallies[k] = t
	}
	t.replies++
	if at.After(t.last) {
		t.last = at
	}
}

// wait blocks until every probe sent has been answered or timed out.
func (c *run) wait() {
	for range cap(c.sem) {
		c.sem <- struct{}{}
	}
	for range cap(c.sem) {
		<-c.sem
	}
}

// hostsOf lists the host numbers of b that a census probes.
func hostsOf(b netip.Prefix) []int {
	var hs []int
	for h := range 256 {
		if _, ok := hostAddr(b, h); ok {
			hs = append(hs, h)
		}
	}
	return hs
}

// hostAddr is host number h of block b, if b has it. The network and
// broadcast addresses of a /24 (or of a longer prefix of four addresses or
// more) are skipped: a probe to a directed broadcast address can make a
// whole network answer at once.
func hostAddr(b netip.Prefix, h int) (netip.Addr, bool) {
	b = b.Masked()
	base := b.Addr().As4()
	size := 1 << (32 - b.Bits())
	first := int(base[3])
	if h < first || h >= first+size {
		return netip.Addr{}, false
	}
	if size >= 4 && (h == first || h == first+size-1) {
		return netip.Addr{}, false
	}
	base[3] = byte(h)
	return netip.AddrFrom4(base), true
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
