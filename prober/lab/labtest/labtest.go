// Package labtest brings a lab up for a test and checks reachability from
// inside it. Each lab gets a unique name prefix, so tests of many packages
// can run labs side by side; the lab is served in-process and removed
// when the test ends.
//
// Lab tests need root. They skip when not root, and fail instead when
// CUTOFF_REQUIRE_LAB=1 (CI sets it), so a lab test can never pass
// silently by skipping where it must run.
package labtest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/cutoffnet/cutoff/prober/lab"
)

// EnvRequire names the variable that turns a skipped lab test into a
// failure.
const EnvRequire = "CUTOFF_REQUIRE_LAB"

// Require skips the test unless it can build a lab (root), or fails it
// when EnvRequire is "1".
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("lab test needs root (network namespaces) and %s=1 forbids skipping", EnvRequire)
	}
	t.Skipf("lab test skipped: needs root to create network namespaces (set %s=1 to make this a failure)", EnvRequire)
}

// Prefix returns a fresh, unique lab name prefix.
func Prefix() string {
	var b [4]byte
	rand.Read(b[:])
	return "cutofftest-" + hex.EncodeToString(b[:])
}

// Up brings up cfg's lab under a unique prefix and a temporary state
// directory, serves its TCP and DNS listeners in-process, and removes it
// all when the test ends.
func Up(t testing.TB, cfg lab.Config) *lab.Lab {
	t.Helper()
	Require(t)
	cfg.Prefix = Prefix()
	cfg.StateDir = t.TempDir()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := lab.Down(ctx, cfg); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(l.Close)
	srv, err := l.Listen(slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("lab listen: %v", err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("lab serve: %v", err)
		}
	})
	return l
}

// Ping sends count ICMP echo requests to each address from the vantage's
// namespace and returns how many replies came back from each within wait
// of the last request. network is "ip4:icmp" (raw socket) or "udp4" (the
// unprivileged ping socket, which the lab allows in vantages).
func Ping(ctx context.Context, l *lab.Lab, vantage, network string, addrs []netip.Addr, count int, wait time.Duration) (map[netip.Addr]int, error) {
	var c *icmp.PacketConn
	err := l.Do(vantage, func() (err error) {
		c, err = icmp.ListenPacket(network, "0.0.0.0")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s in %s: %w", network, vantage, err)
	}
	defer c.Close()
	var idb [2]byte
	rand.Read(idb[:])
	id := int(binary.BigEndian.Uint16(idb[:]))
	type key struct {
		addr netip.Addr
		seq  int
	}
	// Every request is registered before it is sent; the reader counts
	// each registered reply once and ends when all have come back or the
	// wait is over. It reads while we send, so a burst of replies does
	// not overflow the socket's buffer.
	var mu sync.Mutex
	pending := map[key]bool{}
	got := map[netip.Addr]int{}
	sending := true
	allIn := make(chan struct{}, 1)
	readErr := make(chan error, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				readErr <- err
				return
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			e, ok := m.Body.(*icmp.Echo)
			if !ok || (network != "udp4" && e.ID != id) { // ping sockets rewrite the ID
				continue
			}
			var src netip.Addr
			switch f := from.(type) {
			case *net.IPAddr:
				src, _ = netip.AddrFromSlice(f.IP)
			case *net.UDPAddr:
				src, _ = netip.AddrFromSlice(f.IP)
			}
			k := key{src.Unmap(), e.Seq}
			mu.Lock()
			if pending[k] {
				delete(pending, k) // count a duplicate once
				got[k.addr]++
				if len(pending) == 0 && !sending {
					select {
					case allIn <- struct{}{}:
					default:
					}
				}
			}
			mu.Unlock()
		}
	}()
	seq := 0
	for i := 0; i < count; i++ {
		for _, a := range addrs {
			seq = (seq + 1) & 0xffff
			m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("cutoff lab check")}}
			b, _ := m.Marshal(nil)
			var dst net.Addr = &net.IPAddr{IP: a.AsSlice()}
			if network == "udp4" {
				dst = &net.UDPAddr{IP: a.AsSlice()}
			}
			mu.Lock()
			pending[key{a, seq}] = true
			mu.Unlock()
			// A send error (no route) is an answer too: nothing comes back.
			c.WriteTo(b, dst)
			if seq%16 == 0 {
				// Pace bursts: on a busy machine the reader may not keep
				// up with replies arriving faster than it is scheduled,
				// and the socket's default buffer holds only a few
				// hundred, so a check would count its own drops as loss.
				time.Sleep(time.Millisecond)
			}
		}
	}
	mu.Lock()
	sending = false
	if len(pending) == 0 {
		allIn <- struct{}{}
	}
	mu.Unlock()
	deadline := time.After(wait)
	select {
	case <-allIn:
	case <-deadline:
	case <-ctx.Done():
		err = ctx.Err()
	case err = <-readErr:
	}
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	out := make(map[netip.Addr]int, len(got))
	for k, v := range got {
		out[k] = v
	}
	return out, err
}

// Dial opens a TCP connection from the vantage's namespace and closes it.
func Dial(ctx context.Context, l *lab.Lab, vantage string, to netip.AddrPort, timeout time.Duration) error {
	return l.Do(vantage, func() error {
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp4", to.String())
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// Query asks the DNS server at server (port 53) for qname's records of
// qtype from the vantage's namespace, over UDP.
func Query(ctx context.Context, l *lab.Lab, vantage string, server netip.Addr, qname string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	var conn *dns.Conn
	err := l.Do(vantage, func() error {
		c, err := net.DialTimeout("udp4", netip.AddrPortFrom(server, 53).String(), timeout)
		if err != nil {
			return err
		}
		conn = &dns.Conn{Conn: c}
		return nil
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(qname), qtype)
	cl := dns.Client{Timeout: timeout}
	r, _, err := cl.ExchangeWithConnContext(ctx, m, conn)
	return r, err
}
