//go:build linux

package prober

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

// ICMPMode chooses the kind of ICMP socket.
type ICMPMode uint8

const (
	// ICMPAuto tries a raw socket, then a ping socket.
	ICMPAuto ICMPMode = iota
	// ICMPRaw needs root or CAP_NET_RAW. It sees every ICMP message
	// reaching the host (filtered with ICMP_FILTER to the types we use)
	// and lets the engine pick its echo identifier.
	ICMPRaw
	// ICMPPing is the unprivileged ICMP datagram socket, allowed when
	// the process's group is inside net.ipv4.ping_group_range. The
	// kernel picks the identifier and delivers only replies carrying it;
	// ICMP errors arrive on the socket's error queue.
	ICMPPing
)

func (m ICMPMode) String() string {
	switch m {
	case ICMPAuto:
		return "auto"
	case ICMPRaw:
		return "raw"
	case ICMPPing:
		return "ping"
	}
	return fmt.Sprintf("icmpmode(%d)", uint8(m))
}

const (
	// DefaultContact is named in the payload when ICMPConfig.Contact is
	// empty.
	DefaultContact = "https://github.com/cutoffnet/cutoff"
	// DefaultSocketBuffer is the socket buffer asked for each way:
	// about a second of replies at 100k probes/s.
	DefaultSocketBuffer = 16 << 20
	// DefaultBatch is how many packets one sendmmsg or recvmmsg moves.
	DefaultBatch = 64
)

// ICMPConfig configures an ICMP echo engine. The zero value works.
type ICMPConfig struct {
	Config
	// Mode picks the socket; ICMPAuto (the zero value) tries raw, then
	// ping.
	Mode ICMPMode
	// Source is the address to send from; the zero Addr lets routing
	// choose.
	Source netip.Addr
	// Contact is the URL (or mail address) that every echo request's
	// payload names for questions and opt-out; empty means
	// DefaultContact.
	Contact string
	// SocketBuffer is the receive and send buffer size in bytes; 0 means
	// DefaultSocketBuffer.
	SocketBuffer int
	// Batch is the largest number of packets per system call; 0 means
	// DefaultBatch.
	Batch int
}

// ICMP is an IPv4 ICMP echo engine: one socket shared by every probe, one
// goroutine that sends in batches, one that receives in batches, and one
// that times probes out. Build it with NewICMP; it is safe for concurrent
// use.
type ICMP struct {
	cfg   ICMPConfig
	mode  ICMPMode
	pc    net.PacketConn
	conn  *ipv4.PacketConn
	rc    syscall.RawConn
	m     *matcher
	text  []byte
	reqs  chan icmpReq
	quit  chan struct{}
	close sync.Once

	mu     sync.RWMutex // held shared by Probe while it enqueues
	closed bool

	sender, others sync.WaitGroup
}

var _ Prober = (*ICMP)(nil)

type icmpReq struct {
	addr [4]byte
	done func(Result)
}

// NewICMP opens the engine's socket in the current network namespace and
// starts its goroutines. The socket stays in that namespace even if the
// engine is later used from another one.
func NewICMP(cfg ICMPConfig) (*ICMP, error) {
	cfg.Config = cfg.Config.withDefaults()
	if cfg.Contact == "" {
		cfg.Contact = DefaultContact
	}
	if cfg.SocketBuffer <= 0 {
		cfg.SocketBuffer = DefaultSocketBuffer
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Source.IsValid() && !cfg.Source.Unmap().Is4() {
		return nil, fmt.Errorf("icmp: source %s is not IPv4", cfg.Source)
	}
	pc, id, mode, err := openICMP(cfg.Mode, cfg.Source, cfg.SocketBuffer)
	if err != nil {
		return nil, err
	}
	var secret [16]byte
	if _, err := rand.Read(secret[:]); err != nil {
		pc.Close()
		return nil, fmt.Errorf("icmp: secret: %w", err)
	}
	if mode == ICMPRaw {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			pc.Close()
			return nil, fmt.Errorf("icmp: identifier: %w", err)
		}
		id = uint16(b[0])<<8 | uint16(b[1])
	}
	e := &ICMP{
		cfg:  cfg,
		mode: mode,
		pc:   pc,
		conn: ipv4.NewPacketConn(pc),
		m:    newMatcher(newSipKey(secret), id, mode == ICMPRaw, cfg.Timeout, cfg.Now()),
		text: []byte("cutoff reachability measurement; opt out: " + cfg.Contact),
		reqs: make(chan icmpReq, 4*cfg.Batch),
		quit: make(chan struct{}),
	}
	if mode == ICMPRaw {
		var f ipv4.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv4.ICMPTypeEchoReply)
		f.Accept(ipv4.ICMPTypeDestinationUnreachable)
		f.Accept(ipv4.ICMPTypeTimeExceeded)
		if err := e.conn.SetICMPFilter(&f); err != nil {
			pc.Close()
			return nil, fmt.Errorf("icmp: set ICMP_FILTER: %w", err)
		}
	} else {
		sc, ok := pc.(syscall.Conn)
		if !ok {
			pc.Close()
			return nil, fmt.Errorf("icmp: %T has no raw conn", pc)
		}
		if e.rc, err = sc.SyscallConn(); err != nil {
			pc.Close()
			return nil, fmt.Errorf("icmp: raw conn: %w", err)
		}
	}
	e.sender.Add(1)
	go e.send()
	e.others.Add(2)
	go e.receive()
	go e.tick()
	return e, nil
}

// openICMP opens a socket of mode, or for ICMPAuto the first that the
// process may open.
func openICMP(mode ICMPMode, src netip.Addr, buf int) (net.PacketConn, uint16, ICMPMode, error) {
	if mode != ICMPAuto {
		pc, id, err := openICMPSocket(mode, src, buf)
		if err != nil {
			return nil, 0, 0, fmt.Errorf("listen icmp (%s): %w", mode, err)
		}
		return pc, id, mode, nil
	}
	pc, id, rawErr := openICMPSocket(ICMPRaw, src, buf)
	if rawErr == nil {
		return pc, id, ICMPRaw, nil
	}
	pc, id, pingErr := openICMPSocket(ICMPPing, src, buf)
	if pingErr == nil {
		return pc, id, ICMPPing, nil
	}
	return nil, 0, 0, fmt.Errorf("listen icmp: raw socket: %v (needs root or CAP_NET_RAW); ping socket: %w (needs the group in net.ipv4.ping_group_range)", rawErr, pingErr)
}

// Mode is the kind of socket the engine uses.
func (e *ICMP) Mode() ICMPMode { return e.mode }

// Stats returns the engine's counters so far.
func (e *ICMP) Stats() ICMPStats { return e.m.stats() }

// Probe sends an echo request to t.Addr (IPv4 only). It waits for the
// rate limiter and for room in the send queue; done is called once the
// reply, an ICMP error quoting the request, or the timeout comes.
func (e *ICMP) Probe(ctx context.Context, t Target, done func(Result)) error {
	if t.Kind != KindICMP {
		return fmt.Errorf("icmp engine: %w: cannot probe %s", ErrBadTarget, t)
	}
	a := t.Addr.Unmap()
	if a.IsValid() && !a.Is4() {
		return fmt.Errorf("icmp engine: %w: %s: IPv6 is not supported", ErrBadTarget, t.Addr)
	}
	if err := e.cfg.admit(ctx, t); err != nil {
		return err
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return ErrClosed
	}
	select {
	case e.reqs <- icmpReq{a.As4(), done}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-e.quit:
		return ErrClosed
	}
}

// Close stops the engine: queued and in-flight probes complete with an
// Error, the goroutines end and the socket is closed.
func (e *ICMP) Close() error {
	var err error
	e.close.Do(func() {
		close(e.quit)
		e.mu.Lock() // wait for Probe calls to leave
		e.closed = true
		e.mu.Unlock()
		// Closing the socket first ends a write blocked on a full
		// buffer, and the receiver.
		err = e.pc.Close()
		e.sender.Wait()
		e.others.Wait()
		// A Probe that won its race against quit may have queued
		// after the sender's last drain; none can queue now.
		e.drain()
		e.m.mu.Lock()
		cs := e.m.abandon(nil)
		e.m.mu.Unlock()
		complete(cs)
	})
	return err
}

// send is the sender goroutine: it takes queued probes in batches,
// registers them, and writes them with sendmmsg.
func (e *ICMP) send() {
	defer e.sender.Done()
	n := e.cfg.Batch
	batch := make([]icmpReq, 0, n)
	counters := make([]uint64, n)
	msgs := make([]ipv4.Message, n)
	size := echoTextOff + len(e.text)
	for i := range msgs {
		b := make([]byte, size)
		copy(b[echoTextOff:], e.text)
		msgs[i].Buffers = [][]byte{b}
		// Addresses are reused: WriteBatch marshals them synchronously.
		if e.mode == ICMPRaw {
			msgs[i].Addr = &net.IPAddr{IP: make(net.IP, 4)}
		} else {
			msgs[i].Addr = &net.UDPAddr{IP: make(net.IP, 4)}
		}
	}
	var cs []completion
	for {
		batch = batch[:0]
		select {
		case r := <-e.reqs:
			batch = append(batch, r)
		case <-e.quit:
			e.drain()
			return
		}
	fill:
		for len(batch) < n {
			select {
			case r := <-e.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		now := e.m.offset(e.cfg.Now())
		e.m.mu.Lock()
		for i, r := range batch {
			counters[i] = e.m.register(r.addr, now, r.done)
		}
		e.m.mu.Unlock()
		for i, r := range batch {
			putEcho(msgs[i].Buffers[0], e.m.key, r.addr, e.m.id, counters[i], now)
			switch a := msgs[i].Addr.(type) {
			case *net.IPAddr:
				copy(a.IP, r.addr[:])
			case *net.UDPAddr:
				copy(a.IP, r.addr[:])
			}
		}
		cs = e.write(msgs[:len(batch)], counters, cs[:0])
		complete(cs)
	}
}

// write sends msgs, failing the probe of any message the kernel refuses
// (e.g. no route) and going on with the rest.
func (e *ICMP) write(msgs []ipv4.Message, counters []uint64, cs []completion) []completion {
	retried := -1
	for i := 0; i < len(msgs); {
		k, err := e.conn.WriteBatch(msgs[i:], 0)
		k = max(k, 0) // sendmmsg's -1 comes through on error
		e.m.sent.Add(uint64(k))
		i += k
		if err == nil {
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return cs // Close abandons what is in flight
		}
		if e.mode == ICMPPing && retried != i && pendingICMPError(err) {
			// An ICMP error about an earlier probe set the socket's
			// pending error and this write reported it instead of
			// sending; the error itself waits on the error queue.
			// Collect it and send the message again, once: a
			// second failure is about this message.
			retried = i
			e.readErrors()
			continue
		}
		e.m.mu.Lock()
		cs = e.m.fail(counters[i], fmt.Errorf("send: %w", err), cs)
		e.m.mu.Unlock()
		i++
	}
	return cs
}

// pendingICMPError reports whether err is what an ICMP error leaves
// pending on a ping socket (see ping_err and icmp_err_convert in Linux).
func pendingICMPError(err error) bool {
	for _, e := range []error{syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ECONNREFUSED,
		syscall.EHOSTDOWN, syscall.EACCES, syscall.EPROTO, syscall.ENOPROTOOPT, syscall.EMSGSIZE, syscall.EOPNOTSUPP} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// drain completes the probes still queued when the engine closes.
func (e *ICMP) drain() {
	for {
		select {
		case r := <-e.reqs:
			r.done(Result{
				Target: Target{Kind: KindICMP, Addr: netip.AddrFrom4(r.addr)},
				Sent:   e.cfg.Now(), Outcome: Error, Err: ErrClosed.Error(),
			})
		default:
			return
		}
	}
}

// receive is the receiver goroutine: it reads replies and errors in
// batches and hands each to the matcher under one lock per batch.
func (e *ICMP) receive() {
	defer e.others.Done()
	n := e.cfg.Batch
	msgs := make([]ipv4.Message, n)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	pkts := make([]packet, n)
	verdicts := make([]verdict, n)
	var cs []completion
	for {
		k, err := e.conn.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if e.mode == ICMPPing {
				// An ICMP error sets the socket's pending error,
				// which this read reported; the error itself waits
				// on the error queue.
				e.readErrors()
				continue
			}
			e.cfg.Log.Warn("icmp read", "err", err)
			select {
			case <-e.quit:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		for i := range k {
			b := msgs[i].Buffers[0][:msgs[i].N]
			var from [4]byte
			if e.mode == ICMPRaw {
				var ok bool
				if from, b, ok = parseIPv4(b); !ok {
					verdicts[i] = vMalformed
					continue
				}
			} else if a, ok := msgs[i].Addr.(*net.UDPAddr); ok && a.IP.To4() != nil {
				from = [4]byte(a.IP.To4())
			} else {
				verdicts[i] = vMalformed
				continue
			}
			verdicts[i] = parseICMP(from, b, &pkts[i])
		}
		now := e.m.offset(e.cfg.Now())
		e.m.mu.Lock()
		for i := range k {
			cs, _ = e.m.handle(&pkts[i], verdicts[i], now, cs)
		}
		e.m.mu.Unlock()
		complete(cs)
		clear(cs)
		cs = cs[:0]
	}
}

// readErrors drains a ping socket's error queue into the matcher.
func (e *ICMP) readErrors() {
	buf := make([]byte, 2048)
	oob := make([]byte, 512)
	var cs []completion
	now := e.m.offset(e.cfg.Now())
	err := readErrQueue(e.rc, buf, oob, func(ie *icmpError) {
		var p packet
		v := vForeign
		if ie.typ == icmpUnreachable || ie.typ == icmpTimeExceed {
			p = packet{from: ie.from, dst: ie.dst, typ: ie.typ, code: ie.code}
			v = parseQuotedEcho(ie.quoted, &p)
		}
		e.m.mu.Lock()
		cs, _ = e.m.handle(&p, v, now, cs)
		e.m.mu.Unlock()
	})
	if err != nil && !errors.Is(err, net.ErrClosed) {
		e.cfg.Log.Warn("icmp error queue", "err", err)
	}
	complete(cs)
}

// tick times probes out. Timeouts are resolved to a fiftieth of the
// timeout (at least a millisecond, at most 100 ms).
func (e *ICMP) tick() {
	defer e.others.Done()
	d := min(max(e.cfg.Timeout/50, time.Millisecond), 100*time.Millisecond)
	t := time.NewTicker(d)
	defer t.Stop()
	var cs []completion
	for {
		select {
		case <-e.quit:
			return
		case <-t.C:
		}
		if e.mode == ICMPPing {
			// An error whose pending-error signal was consumed by
			// a read that returned data still waits in the queue.
			e.readErrors()
		}
		now := e.m.offset(e.cfg.Now())
		e.m.mu.Lock()
		cs = e.m.expireUntil(now, cs[:0])
		e.m.mu.Unlock()
		complete(cs)
		clear(cs)
	}
}
