package lab

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Faults act on targets: "border" (the link between the border and the
// country: the whole country goes dark), a network ("net1", or its prefix)
// and a vantage ("vp1": its own uplink). Each target is a link, and a
// fault acts on the link's upstream end (the side towards the transit):
//
//   - Cut takes that end down. The upstream router loses its routes
//     through the link and answers for the space behind it with ICMP host
//     unreachable (or silence, with cut_answer: silent); the downstream
//     side only sees its carrier go, so a cut vantage's probes vanish
//     without a local error, as when a real uplink dies.
//   - Loss drops a share of the packets sent down the link (nftables), so
//     that share of probes goes unanswered.
//   - Delay adds latency with sch_netem, where the kernel has it.
//   - Decay removes a network's responsive addresses one at a time.
//
// Restore undoes all of them.

// ErrNoNetem means the kernel lacks sch_netem, so delay cannot be
// emulated (loss still can: it uses nftables).
var ErrNoNetem = errors.New("this kernel has no sch_netem (tc netem): delay is unavailable; loss works through nftables")

// Cut takes the target's link down.
func (l *Lab) Cut(ctx context.Context, target string) error {
	k, err := l.plan.target(target)
	if err != nil {
		return err
	}
	h := l.nl[k.up.role]
	lk, err := h.LinkByName(k.upIface)
	if err != nil {
		return fmt.Errorf("cut %s: %w", target, err)
	}
	if err := h.LinkSetDown(lk); err != nil {
		return fmt.Errorf("cut %s: %w", target, err)
	}
	return nil
}

// Restore ends every fault on the target ("all": on every target): the
// link comes back up with its routes and neighbour entries, loss and delay
// go, a running decay stops and the network's hosts answer again.
func (l *Lab) Restore(ctx context.Context, target string) error {
	if target == "all" {
		var errs []error
		for _, t := range l.Targets() {
			errs = append(errs, l.Restore(ctx, t))
		}
		return errors.Join(errs...)
	}
	k, err := l.plan.target(target)
	if err != nil {
		return err
	}
	l.stopDecay(k.faultName)
	if err := l.configureLink(k); err != nil {
		return fmt.Errorf("restore %s: %w", target, err)
	}
	for _, n := range []*node{k.up, k.down} {
		if err := l.applyRoutes(n); err != nil {
			return fmt.Errorf("restore %s: %s: %w", target, l.Namespace(n.role), err)
		}
	}
	if k.down.kind == kindNetwork {
		if err := l.addLocal(k.down); err != nil {
			return fmt.Errorf("restore %s: %w", target, err)
		}
	}
	if err := l.Loss(ctx, target, 0); err != nil {
		return fmt.Errorf("restore %s: %w", target, err)
	}
	if err := l.removeDelay(k); err != nil {
		return fmt.Errorf("restore %s: %w", target, err)
	}
	return nil
}

// clearFaults removes loss rules and delays from a node (used by Up).
func (l *Lab) clearFaults(n *node) error {
	if err := l.withNft(n, func(c *nftables.Conn) error { return setLossRules(c, nil) }); err != nil {
		return err
	}
	for _, k := range n.down {
		if err := l.removeDelay(k); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) addLocal(n *node) error {
	h := l.nl[n.role]
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	for _, a := range n.local {
		if err := h.AddrReplace(lo, hostAddr(a)); err != nil {
			return fmt.Errorf("add %s: %w", a, err)
		}
	}
	return nil
}

func (l *Lab) withNft(n *node, fn func(*nftables.Conn) error) error {
	c, err := nftables.New(nftables.WithNetNSFd(int(l.ns[n.role])))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	return fn(c)
}

// Loss makes the link drop percent% of the packets it carries away from
// the transit (probes towards the country, replies towards a vantage), so
// that share of probes goes unanswered. 0 removes the loss.
func (l *Lab) Loss(ctx context.Context, target string, percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("loss %d%%: want 0 to 100", percent)
	}
	k, err := l.plan.target(target)
	if err != nil {
		return err
	}
	// One table per namespace holds every lossy link of it; serialise
	// read-modify-write within this process.
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.withNft(k.up, func(c *nftables.Conn) error {
		rules, err := lossRules(c)
		if err != nil {
			return err
		}
		if percent == 0 {
			if _, ok := rules[k.upIface]; !ok {
				return nil
			}
			delete(rules, k.upIface)
		} else {
			rules[k.upIface] = percent
		}
		return setLossRules(c, rules)
	})
}

// Delay adds latency to packets sent down the target's link. It needs
// sch_netem; without it, it returns ErrNoNetem.
func (l *Lab) Delay(ctx context.Context, target string, d time.Duration) error {
	k, err := l.plan.target(target)
	if err != nil {
		return err
	}
	if d <= 0 {
		return l.removeDelay(k)
	}
	h := l.nl[k.up.role]
	lk, err := h.LinkByName(k.upIface)
	if err != nil {
		return err
	}
	q := netlink.NewNetem(netlink.QdiscAttrs{LinkIndex: lk.Attrs().Index, Handle: netlink.MakeHandle(1, 0),
		Parent: netlink.HANDLE_ROOT}, netlink.NetemQdiscAttrs{Latency: uint32(d.Microseconds())})
	if err := h.QdiscReplace(q); err != nil {
		if isNoNetem(err) {
			return ErrNoNetem
		}
		return fmt.Errorf("delay %s: %w", target, err)
	}
	return nil
}

func isNoNetem(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}

// NetemAvailable reports whether the kernel can emulate delay (sch_netem).
// It tries a netem qdisc on the transit's loopback and removes it.
func (l *Lab) NetemAvailable() bool {
	h := l.nl[roleTransit]
	lo, err := h.LinkByName("lo")
	if err != nil {
		return false
	}
	q := netlink.NewNetem(netlink.QdiscAttrs{LinkIndex: lo.Attrs().Index, Handle: netlink.MakeHandle(1, 0),
		Parent: netlink.HANDLE_ROOT}, netlink.NetemQdiscAttrs{})
	if err := h.QdiscAdd(q); err != nil {
		return false
	}
	h.QdiscDel(q)
	return true
}

func (l *Lab) linkDelay(k *link) (time.Duration, error) {
	h := l.nl[k.up.role]
	lk, err := h.LinkByName(k.upIface)
	if err != nil {
		return 0, err
	}
	qs, err := h.QdiscList(lk)
	if err != nil {
		return 0, err
	}
	for _, q := range qs {
		if n, ok := q.(*netlink.Netem); ok && q.Attrs().Parent == netlink.HANDLE_ROOT {
			return time.Duration(n.Latency) * time.Microsecond, nil
		}
	}
	return 0, nil
}

func (l *Lab) removeDelay(k *link) error {
	h := l.nl[k.up.role]
	lk, err := h.LinkByName(k.upIface)
	if err != nil {
		return err
	}
	qs, err := h.QdiscList(lk)
	if err != nil {
		return err
	}
	for _, q := range qs {
		if _, ok := q.(*netlink.Netem); ok && q.Attrs().Parent == netlink.HANDLE_ROOT {
			if err := h.QdiscDel(q); err != nil {
				return fmt.Errorf("remove delay: %w", err)
			}
		}
	}
	return nil
}

type decayRun struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Decay makes a network's hosts stop answering one by one: it removes
// their addresses in a seeded random order, evenly spread so the last goes
// at over. It returns when all are gone, when Restore stops it (nil), or
// when ctx ends (ctx.Err()). step, if not nil, is called after each
// removal with the number of hosts still answering. Restore brings the
// hosts back.
func (l *Lab) Decay(ctx context.Context, target string, over time.Duration, step func(left int)) error {
	k, err := l.plan.target(target)
	if err != nil {
		return err
	}
	n := k.down
	if n.kind != kindNetwork {
		return fmt.Errorf("decay %s: only a network's hosts can decay", target)
	}
	if over < 0 {
		return fmt.Errorf("decay %s: negative duration %s", target, over)
	}
	dctx, cancel := context.WithCancel(ctx)
	run := &decayRun{cancel: cancel, done: make(chan struct{})}
	defer close(run.done)
	defer cancel()
	l.mu.Lock()
	if _, busy := l.decays[k.faultName]; busy {
		l.mu.Unlock()
		return fmt.Errorf("decay %s: already decaying", target)
	}
	l.decays[k.faultName] = run
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.decays, k.faultName)
		l.mu.Unlock()
	}()

	order := decayOrder(l.cfg.Seed, n.network, n.local)
	h := l.nl[n.role]
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("decay %s: %w", target, err)
	}
	start := time.Now()
	for i, a := range order {
		at := start.Add(over * time.Duration(i+1) / time.Duration(len(order)))
		t := time.NewTimer(time.Until(at))
		select {
		case <-dctx.Done():
			t.Stop()
			return ctx.Err() // nil when Restore stopped us
		case <-t.C:
		}
		if err := h.AddrDel(lo, hostAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("decay %s: remove %s: %w", target, a, err)
		}
		if step != nil {
			step(len(order) - i - 1)
		}
	}
	return nil
}

// decayOrder is the order in which a network's hosts go silent: random
// but fixed by the seed, so a scenario replays alike.
func decayOrder(seed uint64, network int, hosts []netip.Addr) []netip.Addr {
	r := rand.New(rand.NewPCG(seed, 1<<32|uint64(network)))
	out := make([]netip.Addr, len(hosts))
	for i, j := range r.Perm(len(hosts)) {
		out[i] = hosts[j]
	}
	return out
}

func (l *Lab) stopDecay(target string) {
	l.mu.Lock()
	run := l.decays[target]
	l.mu.Unlock()
	if run != nil {
		run.cancel()
		<-run.done
	}
}

func (l *Lab) stopDecays() {
	for _, t := range l.Targets() {
		l.stopDecay(t)
	}
}

// Status is the lab's state as the kernel reports it.
type Status struct {
	Prefix     string          `json:"prefix"`
	Namespaces []string        `json:"namespaces"`
	Links      []LinkStatus    `json:"links"`
	Networks   []NetworkStatus `json:"networks"`
	Control    []netip.Addr    `json:"control"`
	Vantages   []Vantage       `json:"vantages"`
	Netem      bool            `json:"netem"`
	Serve      ServeStatus     `json:"serve"`
}

// LinkStatus is one link's state; Target is its fault name, if any.
type LinkStatus struct {
	Up     string        `json:"upstream"` // namespaces at either end
	Down   string        `json:"downstream"`
	Target string        `json:"target,omitempty"`
	Subnet netip.Prefix  `json:"subnet"`
	IsUp   bool          `json:"up"` // the upstream end is up
	Loss   int           `json:"loss_percent"`
	Delay  time.Duration `json:"delay"`
}

// NetworkStatus counts a network's hosts that still have their address.
type NetworkStatus struct {
	Name       string       `json:"name"`
	Prefix     netip.Prefix `json:"prefix"`
	Hosts      int          `json:"hosts"`
	Answering  int          `json:"answering"`
	TCP        int          `json:"tcp_listeners"`
	DNS        int          `json:"dns_servers"`
	FilterICMP bool         `json:"filter_icmp"`
}

// Faults lists the active faults in words, derived from Status.
func (s Status) Faults() []string {
	var out []string
	for _, k := range s.Links {
		name := k.Target
		if name == "" {
			name = k.Up + "–" + k.Down
		}
		if !k.IsUp {
			out = append(out, "cut "+name)
		}
		if k.Loss > 0 {
			out = append(out, fmt.Sprintf("loss %s %d%%", name, k.Loss))
		}
		if k.Delay > 0 {
			out = append(out, fmt.Sprintf("delay %s %s", name, k.Delay))
		}
	}
	for _, n := range s.Networks {
		if n.Answering < n.Hosts {
			out = append(out, fmt.Sprintf("decay %s: %d of %d hosts answer", n.Name, n.Answering, n.Hosts))
		}
	}
	return out
}

// Status reads the lab's state from the kernel.
func (l *Lab) Status(ctx context.Context) (Status, error) {
	s := Status{Prefix: l.cfg.Prefix, Vantages: l.Vantages(), Netem: l.NetemAvailable()}
	var err error
	if s.Namespaces, err = namespacesOf(l.cfg.Prefix); err != nil {
		return s, err
	}
	for _, c := range l.cfg.Control {
		s.Control = append(s.Control, c.Addr)
	}
	loss := map[string]map[string]int{}
	for _, k := range l.plan.links {
		h := l.nl[k.up.role]
		lk, err := h.LinkByName(k.upIface)
		if err != nil {
			return s, fmt.Errorf("%s: %w", l.Namespace(k.up.role), err)
		}
		if loss[k.up.role] == nil {
			err := l.withNft(k.up, func(c *nftables.Conn) (err error) {
				loss[k.up.role], err = lossRules(c)
				return err
			})
			if err != nil {
				return s, err
			}
		}
		d, err := l.linkDelay(k)
		if err != nil {
			return s, err
		}
		s.Links = append(s.Links, LinkStatus{Up: l.Namespace(k.up.role), Down: l.Namespace(k.down.role),
			Target: k.faultName, Subnet: k.subnet, IsUp: lk.Attrs().Flags&net.FlagUp != 0,
			Loss: loss[k.up.role][k.upIface], Delay: d})
	}
	for i, nw := range l.cfg.Country.Networks {
		n := l.plan.byRole[nw.Name]
		h := l.nl[n.role]
		lo, err := h.LinkByName("lo")
		if err != nil {
			return s, err
		}
		addrs, err := h.AddrList(lo, unix.AF_INET)
		if err != nil {
			return s, err
		}
		have := map[netip.Addr]bool{}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				have[ip.Unmap()] = true
			}
		}
		ns := NetworkStatus{Name: nw.Name, Prefix: nw.Prefix, Hosts: len(l.plan.hosts[i]), FilterICMP: nw.FilterICMP}
		for _, hst := range l.plan.hosts[i] {
			if have[hst.Addr] {
				ns.Answering++
			}
			if len(hst.TCPPorts) > 0 {
				ns.TCP++
			}
			if hst.DNSZone != "" {
				ns.DNS++
			}
		}
		s.Networks = append(s.Networks, ns)
	}
	s.Serve = ServeState(l.StateDir())
	return s, nil
}
