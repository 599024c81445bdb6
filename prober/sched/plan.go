package sched

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"

	"github.com/cutoffnet/cutoff/prober"
	"github.com/cutoffnet/cutoff/store"
)

// block is one /24 (or longer prefix) as the scheduler keeps it: 88 bytes.
type block struct {
	ever bitmap // E(b): host octets that ever answered ICMP echo
	hot  bitmap // history: answered the last time it was probed
	base uint32 // first address
	// avail is A(b) as the visits use it: the plan's (the census's) at
	// first, then learned from results (see rate).
	avail float32
	plan  float32 // A(b) as the plan gave it
	learn rate    // A(b) learned from exploring visits
	pend  tally   // exploring visits' probes, awaiting a verdict of up
	bits  uint8
}

func (b *block) prefix() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(b.base >> 24), byte(b.base >> 16), byte(b.base >> 8), byte(b.base)}), int(b.bits))
}

func (b *block) addr(h uint8) netip.Addr {
	a := b.base | uint32(h)
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
}

// unit is one judgement unit: a block, or several sparse blocks pooled.
// Its blocks are s.blocks[block0:block0+nblocks] and its services
// s.svcs[svc0:svc0+nsvc]. 56 bytes.
type unit struct {
	next     int64 // when its pending out-of-round visit is due (Unix ns); 0: none
	lastSent int64 // when its last probe left (Unix ns)
	block0   int32
	svc0     int32
	addrPos  int32 // its place in s.byAddr
	belief   float32
	tokens   float32 // per-block cap: probes it may still send now
	avail    float32 // A of the unit: its blocks' A weighted by |E(b)|
	nblocks  uint16
	nsvc     uint16
	country  uint16
	slot     uint16 // its turn in its country's interleaved schedule
	track    track
	why      Why   // of the pending out-of-round visit
	perRound uint8 // visits per round; above 1, on the interleaved schedule
	backoff  uint8
	flags    uint8 // changes as it is visited
	static   uint8 // fixed when the plan is built: read by Units from any goroutine
}

const (
	unitMeasurable uint8 = 1 << iota // in unit.static
	unitInFlight                     // in unit.flags
	unitDeferred                     // in unit.flags: a visit fell due while one was in flight
)

// service is a TCP or DNS target, evidence for its block.
type service struct {
	t      prober.Target
	avail  float32
	hot    bool
	manual bool // named by an operator: probed in every regular visit
}

type control struct {
	t        prober.Target
	lastSent int64
}

// span is a country's units in s.byAddr.
type span struct{ lo, hi int32 }

// layout is everything built from a plan.
type layout struct {
	blocks       []block
	units        []unit
	svcs         []service
	ctrls        []control
	byAddr       []int32
	countries    []span
	slotted      []uint16 // by country: units on the interleaved schedule
	names        []string // country codes, by index
	skipped      int
	unmeasurable int
}

// build turns a plan into compact state: blocks pooled into units, units
// shuffled into visit order (a unit's place in the order is its phase in
// the round), blocks and services laid out by unit.
func build(p *store.Plan, cfg Config, have func(prober.Kind) bool, rng *rand.Rand) (*layout, error) {
	l := &layout{skipped: p.Skipped}
	icmp := have(prober.KindICMP)

	// The plan's blocks, checked and sorted by network then address.
	type pb struct {
		b       store.PlanBlock
		base    uint32
		network netip.Prefix
		svcs    []service
	}
	bs := make([]pb, 0, len(p.Blocks))
	for _, b := range p.Blocks {
		if !b.Block.Addr().Is4() || b.Block.Bits() < 24 {
			return nil, fmt.Errorf("plan block %s: not an IPv4 /24 or longer", b.Block)
		}
		b.Block = b.Block.Masked()
		bs = append(bs, pb{b: b, base: be32(b.Block.Addr()), network: b.Network})
	}
	slices.SortFunc(bs, func(x, y pb) int {
		if c := cmpPrefix(x.network, y.network); c != 0 {
			return c
		}
		return cmp.Compare(x.base, y.base)
	})
	for i := 1; i < len(bs); i++ {
		if bs[i].base == bs[i-1].base {
			return nil, fmt.Errorf("plan lists block %s twice", bs[i].b.Block)
		}
	}
	// Blocks are sorted by network first; find a service's block through
	// their indexes sorted by address.
	byBase := make([]int, len(bs))
	for i := range byBase {
		byBase[i] = i
	}
	slices.SortFunc(byBase, func(x, y int) int { return cmp.Compare(bs[x].base, bs[y].base) })
	blockOf := func(a netip.Addr) int {
		if !a.Is4() {
			return -1
		}
		v := be32(a)
		j, _ := slices.BinarySearchFunc(byBase, v, func(i int, v uint32) int { return cmp.Compare(bs[i].base, v) })
		// j is the first block starting after v, or at v.
		if j < len(byBase) && bs[byBase[j]].base == v {
			return byBase[j]
		}
		if j == 0 {
			return -1
		}
		i := byBase[j-1]
		if bs[i].b.Block.Contains(a) {
			return i
		}
		return -1
	}

	for _, t := range p.Services {
		k, err := prober.ParseKind(t.Kind)
		if err != nil {
			return nil, fmt.Errorf("plan service %s: %w", t.Addr, err)
		}
		if !have(k) {
			l.skipped++
			continue
		}
		i := blockOf(t.Addr)
		if i < 0 {
			l.skipped++ // IPv6, or outside every planned block
			continue
		}
		bs[i].svcs = append(bs[i].svcs, service{
			t:      prober.Target{Kind: k, Addr: t.Addr, Port: t.Port, Qname: t.Qname},
			avail:  float32(history(t.Probes, t.Replies, 0.5)),
			hot:    t.Answered,
			manual: t.Origin != "census",
		})
	}

	// Compile blocks; without an ICMP prober, ICMP addresses are dropped.
	blocks := make([]block, len(bs))
	pbs := make([]poolBlock, len(bs))
	networks := map[netip.Prefix]int{}
	for i, x := range bs {
		b := &blocks[i]
		b.base, b.bits = x.base, uint8(x.b.Block.Bits())
		var probes, replies int64
		for _, h := range x.b.Hosts {
			if !icmp || !x.b.Block.Contains(h.Addr) {
				continue
			}
			o := uint8(be32(h.Addr))
			b.ever.set(o)
			if h.Answered {
				b.hot.set(o)
			}
			probes += int64(h.Probes)
			replies += int64(h.Replies)
		}
		a := x.b.Availability
		if a <= 0 {
			a = history(int32(min(probes, 1<<30)), int32(min(replies, 1<<30)), 0.5)
		}
		b.avail = float32(clampAvail(a))
		b.plan = b.avail
		// The plan's A stands for the probes the census sent to E(b),
		// as many as fit the window, and a few at least.
		b.learn = rate{p: b.avail, n: float32(min(max(probes, learnPrior), learnWindow/2))}
		n, ok := networks[x.network]
		if !ok {
			n = len(networks)
			networks[x.network] = n
		}
		pbs[i].network = n
		if e := b.ever.count(); e > 0 {
			pbs[i].targets = append(pbs[i].targets, avail{a: float64(b.avail), n: e})
		}
		for _, s := range x.svcs {
			pbs[i].targets = append(pbs[i].targets, avail{a: clampAvail(float64(s.avail)), n: 1})
		}
	}
	unitOf, measurable := pool(pbs, cfg.MaxPool)

	// Shuffle units into visit order.
	nu := len(measurable)
	order := rng.Perm(nu) // order[pos] = unit number from pooling
	posOf := make([]int32, nu)
	for pos, u := range order {
		posOf[u] = int32(pos)
	}
	members := make([][]int32, nu)
	for i, u := range unitOf {
		if u >= 0 {
			members[posOf[u]] = append(members[posOf[u]], int32(i))
		}
	}

	countryIdx := map[string]uint16{}
	l.units = make([]unit, nu)
	l.blocks = make([]block, 0, len(bs))
	for pos := range l.units {
		u := &l.units[pos]
		u.block0, u.svc0 = int32(len(l.blocks)), int32(len(l.svcs))
		for _, i := range members[pos] {
			l.blocks = append(l.blocks, blocks[i])
			l.svcs = append(l.svcs, bs[i].svcs...)
		}
		if len(members[pos]) > 0xffff || len(l.svcs)-int(u.svc0) > 0xffff {
			return nil, fmt.Errorf("unit of %d blocks is too large", len(members[pos]))
		}
		u.nblocks = uint16(len(members[pos]))
		u.nsvc = uint16(len(l.svcs) - int(u.svc0))
		u.avail = unitAvail(l.blocks[u.block0:])
		c := bs[members[pos][0]].b.Country
		ci, ok := countryIdx[c]
		if !ok {
			if len(l.names) >= 0xffff {
				return nil, fmt.Errorf("plan has too many countries")
			}
			ci = uint16(len(l.names))
			countryIdx[c] = ci
			l.names = append(l.names, c)
		}
		u.country = ci
		u.belief = beliefStart
		u.track = track{confirmed: Up}
		u.tokens = capacity(u)
		u.perRound = 1
		if measurable[order[pos]] {
			u.static |= unitMeasurable
		} else {
			l.unmeasurable++
		}
	}

	// Units by country, then address: a unit's neighbours.
	l.byAddr = make([]int32, nu)
	for i := range l.byAddr {
		l.byAddr[i] = int32(i)
	}
	slices.SortFunc(l.byAddr, func(x, y int32) int {
		ux, uy := &l.units[x], &l.units[y]
		if c := cmp.Compare(ux.country, uy.country); c != 0 {
			return c
		}
		return cmp.Compare(l.blocks[ux.block0].base, l.blocks[uy.block0].base)
	})
	l.countries = make([]span, len(l.names))
	for i, u := range l.byAddr {
		uu := &l.units[u]
		uu.addrPos = int32(i)
		sp := &l.countries[uu.country]
		if sp.hi == 0 {
			sp.lo = int32(i)
		}
		sp.hi = int32(i) + 1
	}

	// Extra visits for the units of small countries. A country's measurable
	// units share one number of visits per round (the least any of them
	// can afford) and take turns on an interleaved schedule, so the
	// country as a whole is observed at even intervals.
	l.slotted = make([]uint16, len(l.names))
	for c, sp := range l.countries {
		per := maxVisitsPerRound
		n := 0
		for _, i := range l.byAddr[sp.lo:sp.hi] {
			u := &l.units[i]
			if u.static&unitMeasurable == 0 {
				continue
			}
			n++
			manual := 0
			for _, s := range l.svcs[u.svc0 : u.svc0+int32(u.nsvc)] {
				if s.manual {
					manual++
				}
			}
			per = min(per, visitsPerRound(cfg.Round, cfg.Sample, int(sp.hi-sp.lo), int(u.nblocks),
				visitCost(float64(u.avail)), float64(manual), cfg.Budget))
		}
		if n == 0 || per <= 1 || n > 0xffff {
			continue
		}
		k := 0
		for _, i := range l.byAddr[sp.lo:sp.hi] {
			u := &l.units[i]
			if u.static&unitMeasurable != 0 {
				u.perRound, u.slot = uint8(per), uint16(k)
				k++
			}
		}
		l.slotted[c] = uint16(k)
	}

	for _, t := range p.Controls {
		k, err := prober.ParseKind(t.Kind)
		if err != nil {
			return nil, fmt.Errorf("plan control target %s: %w", t.Addr, err)
		}
		if !have(k) {
			l.skipped++
			continue
		}
		l.ctrls = append(l.ctrls, control{t: prober.Target{Kind: k, Addr: t.Addr, Port: t.Port, Qname: t.Qname}})
	}
	return l, nil
}

// history estimates an address's availability from its census counts.
func history(probes, replies int32, unknown float64) float64 {
	if probes <= 0 {
		return unknown
	}
	return float64(replies) / float64(probes)
}

// capacity is the size of a unit's token bucket: two full visits per block.
func capacity(u *unit) float32 {
	return float32(2 * MaxProbes * int(max(u.nblocks, 1)))
}

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func cmpPrefix(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(x.Bits(), y.Bits())
}
