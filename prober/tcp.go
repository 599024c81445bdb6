//go:build linux

package prober

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
)

// TCPConfig configures a TCP connect engine. The zero value works.
type TCPConfig struct {
	Config
	// Source is the address to connect from; the zero Addr lets routing
	// choose.
	Source netip.Addr
}

// TCP probes with TCP connects: a completed handshake is Reply, a reset
// Refused (the host is there), an ICMP error during the handshake
// Unreachable (naming the router), silence Timeout. Connections are closed
// as soon as they open; nothing is sent on them. Each probe runs on its
// own goroutine: TCP targets are few per round, and the kernel does the
// matching.
type TCP struct {
	cfg     TCPConfig
	sockets *nsSockets
	quit    chan struct{}
	close   sync.Once

	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup

	sent, replies, refused, unreachable, timeouts, errors atomic.Uint64
}

var _ Prober = (*TCP)(nil)

// TCPStats counts a TCP engine's probes by outcome.
type TCPStats struct {
	Sent, Replies, Refused, Unreachable, Timeouts, Errors uint64
}

// NewTCP makes a TCP engine whose sockets live in the network namespace
// of the calling thread.
func NewTCP(cfg TCPConfig) (*TCP, error) {
	cfg.Config = cfg.Config.withDefaults()
	s, err := newNSSockets()
	if err != nil {
		return nil, fmt.Errorf("tcp: %w", err)
	}
	return &TCP{cfg: cfg, sockets: s, quit: make(chan struct{})}, nil
}

// Stats returns the engine's counters so far.
func (e *TCP) Stats() TCPStats {
	return TCPStats{
		Sent: e.sent.Load(), Replies: e.replies.Load(), Refused: e.refused.Load(),
		Unreachable: e.unreachable.Load(), Timeouts: e.timeouts.Load(), Errors: e.errors.Load(),
	}
}

// Probe starts a connect to t.Addr:t.Port.
func (e *TCP) Probe(ctx context.Context, t Target, done func(Result)) error {
	if t.Kind != KindTCP {
		return fmt.Errorf("tcp engine: %w: cannot probe %s", ErrBadTarget, t)
	}
	if t.Port == 0 {
		return fmt.Errorf("tcp engine: %w: %s has no port", ErrBadTarget, t)
	}
	if err := e.cfg.admit(ctx, t); err != nil {
		return err
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return ErrClosed
	}
	e.wg.Add(1)
	go e.run(t, done)
	return nil
}

func (e *TCP) run(t Target, done func(Result)) {
	defer e.wg.Done()
	sent := e.cfg.Now()
	e.sent.Add(1)
	dst := netip.AddrPortFrom(t.Addr.Unmap(), t.Port)
	c := connect(e.sockets, e.cfg.Source, dst, sent.Add(e.cfg.Timeout), e.quit, e.cfg.Now)
	if c.conn != nil {
		c.conn.Close()
	}
	r := Result{Target: t, Sent: sent, Outcome: c.outcome, Responder: c.responder}
	if c.outcome != Timeout && c.outcome != Error {
		r.RTT = c.at.Sub(sent)
	}
	if c.err != nil {
		r.Err = c.err.Error()
	}
	e.count(c.outcome)
	done(r)
}

func (e *TCP) count(o Outcome) {
	switch o {
	case Reply:
		e.replies.Add(1)
	case Refused:
		e.refused.Add(1)
	case Unreachable:
		e.unreachable.Add(1)
	case Timeout:
		e.timeouts.Add(1)
	default:
		e.errors.Add(1)
	}
}

// Close stops the engine: probes in progress complete with an Error.
func (e *TCP) Close() error {
	e.close.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		close(e.quit)
		e.wg.Wait()
		e.sockets.close()
	})
	return nil
}
