package prober

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// nsSockets opens sockets in the network namespace that was current on
// the calling thread when it was made. TCP and DNS probes open a socket
// each, on whatever goroutine runs them; without this, an engine built
// inside a lab namespace would send from the process's own namespace.
type nsSockets struct {
	reqs chan nsReq
	quit chan struct{}
}

type nsReq struct {
	domain, typ int
	resp        chan nsResp
}

type nsResp struct {
	fd  int
	err error
}

func newNSSockets() (*nsSockets, error) {
	nsfd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open network namespace: %w", err)
	}
	s := &nsSockets{reqs: make(chan nsReq), quit: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine instead
		// of going back to the scheduler in a foreign namespace.
		runtime.LockOSThread()
		err := unix.Setns(nsfd, unix.CLONE_NEWNET)
		unix.Close(nsfd)
		ready <- err
		if err != nil {
			return
		}
		for {
			select {
			case r := <-s.reqs:
				fd, err := unix.Socket(r.domain, r.typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				r.resp <- nsResp{fd, err}
			case <-s.quit:
				return
			}
		}
	}()
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("enter network namespace: %w", err)
	}
	return s, nil
}

func (s *nsSockets) close() { close(s.quit) }

// socket opens a non-blocking socket of typ for addresses like a.
func (s *nsSockets) socket(a netip.Addr, typ int) (int, error) {
	domain := unix.AF_INET
	if !a.Is4() {
		domain = unix.AF_INET6
	}
	r := nsReq{domain: domain, typ: typ, resp: make(chan nsResp, 1)}
	select {
	case s.reqs <- r:
	case <-s.quit:
		return -1, ErrClosed
	}
	res := <-r.resp
	if res.err != nil {
		return -1, os.NewSyscallError("socket", res.err)
	}
	if err := setRecvErr(res.fd, a); err != nil {
		unix.Close(res.fd)
		return -1, err
	}
	return res.fd, nil
}

// setRecvErr asks for ICMP errors on the socket's error queue, where they
// name the router that sent them.
func setRecvErr(fd int, a netip.Addr) error {
	level, opt := unix.IPPROTO_IP, unix.IP_RECVERR
	if !a.Is4() {
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_RECVERR
	}
	if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
		return os.NewSyscallError("setsockopt recverr", err)
	}
	return nil
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if a := ap.Addr(); a.Is4() {
		return &unix.SockaddrInet4{Addr: a.As4(), Port: int(ap.Port())}
	}
	return &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
}

// offender reads the socket's error queue and returns the address of the
// router (or host) whose ICMP error is queued there, if any.
func offender(fd int) netip.Addr {
	_, from, _ := queuedICMP(fd)
	return from
}

// queuedICMP takes the next ICMP error from the socket's error queue: the
// error the kernel made of it and who sent it.
func queuedICMP(fd int) (syscall.Errno, netip.Addr, bool) {
	buf := make([]byte, 512)
	oob := make([]byte, 512)
	_, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
	if err != nil {
		return 0, netip.Addr{}, false
	}
	cms, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return 0, netip.Addr{}, false
	}
	for _, cm := range cms {
		isV4 := cm.Header.Level == unix.IPPROTO_IP && cm.Header.Type == unix.IP_RECVERR
		isV6 := cm.Header.Level == unix.IPPROTO_IPV6 && cm.Header.Type == unix.IPV6_RECVERR
		d := cm.Data
		if !isV4 && !isV6 || len(d) < 16+2 {
			continue
		}
		if o := d[4]; o != unix.SO_EE_ORIGIN_ICMP && o != unix.SO_EE_ORIGIN_ICMP6 {
			continue
		}
		// struct sock_extended_err (errno first, host order), then
		// the offender's sockaddr.
		errno := syscall.Errno(binary.NativeEndian.Uint32(d[0:4]))
		sa := d[16:]
		switch fam := binary.NativeEndian.Uint16(sa[0:2]); {
		case fam == unix.AF_INET && len(sa) >= 8:
			return errno, netip.AddrFrom4([4]byte(sa[4:8])), true
		case fam == unix.AF_INET6 && len(sa) >= 24:
			return errno, netip.AddrFrom16([16]byte(sa[8:24])).Unmap(), true
		}
		return errno, netip.Addr{}, true
	}
	return 0, netip.Addr{}, false
}

// connectResult is what became of a TCP handshake.
type connectResult struct {
	outcome   Outcome
	responder netip.Addr
	err       error     // for Error outcomes
	conn      *os.File  // the connected socket, for Reply; the caller closes it
	fd        int       // conn's descriptor (conn.Fd would make it blocking)
	at        time.Time // when the handshake ended
}

// connect opens a TCP connection to dst from src (if valid) in the
// sockets' namespace, waiting until deadline or until cancel is closed.
// A reset is Refused; an ICMP error during the handshake is Unreachable,
// naming the router that sent it; an error from connect itself (no local
// route, a local unreachable route) is a local Error.
func connect(s *nsSockets, src netip.Addr, dst netip.AddrPort, deadline time.Time, cancel <-chan struct{}, now func() time.Time) connectResult {
	fd, err := s.socket(dst.Addr(), unix.SOCK_STREAM)
	if err != nil {
		return connectResult{outcome: Error, err: err, at: now()}
	}
	if src.IsValid() {
		if err := unix.Bind(fd, sockaddr(netip.AddrPortFrom(src, 0))); err != nil {
			unix.Close(fd)
			return connectResult{outcome: Error, err: os.NewSyscallError("bind", err), at: now()}
		}
	}
	err = unix.Connect(fd, sockaddr(dst))
	switch {
	case err == nil:
		return connectResult{outcome: Reply, responder: dst.Addr(), conn: os.NewFile(uintptr(fd), "tcp"), fd: fd, at: now()}
	case err != unix.EINPROGRESS:
		unix.Close(fd)
		return connectResult{outcome: Error, err: os.NewSyscallError("connect", err), at: now()}
	}
	f := os.NewFile(uintptr(fd), "tcp") // non-blocking: registered with the poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return connectResult{outcome: Error, err: err, at: now()}
	}
	if err := f.SetWriteDeadline(deadline); err != nil {
		f.Close()
		return connectResult{outcome: Error, err: err, at: now()}
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-cancel:
			f.SetWriteDeadline(time.Unix(1, 0))
		case <-stop:
		}
	}()
	var (
		soerr   int
		revents int16
	)
	werr := rc.Write(func(fd uintptr) bool {
		// Ask the socket itself rather than trusting the poller: an
		// answer that came before the descriptor was registered left
		// an edge that RawConn.Write's reset forgets.
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if n, _ := unix.Poll(p, 0); n <= 0 {
			return false
		}
		revents = p[0].Revents
		soerr, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		// POLLOUT: connected (never set in SYN_SENT). POLLERR without a
		// socket error: an ICMP error only queued (it came while
		// connect still held the socket, so the kernel keeps trying).
		return err != nil || soerr != 0 || revents&(unix.POLLOUT|unix.POLLERR) != 0
	})
	at := now()
	res := connectResult{at: at}
	switch {
	case werr != nil && errors.Is(werr, os.ErrDeadlineExceeded):
		select {
		case <-cancel:
			res.outcome, res.err = Error, ErrClosed
		default:
			res.outcome = Timeout
		}
	case werr != nil:
		res.outcome, res.err = Error, werr
	case err != nil:
		res.outcome, res.err = Error, os.NewSyscallError("getsockopt SO_ERROR", err)
	case soerr != 0:
		res.outcome, res.err = classifyConnectErr(syscall.Errno(soerr))
		switch res.outcome {
		case Refused:
			res.responder = dst.Addr()
		case Unreachable:
			res.responder = offender(fd)
		}
	case revents&unix.POLLOUT != 0:
		res.outcome, res.responder, res.conn, res.fd = Reply, dst.Addr(), f, fd
		return res
	default:
		if errno, from, ok := queuedICMP(fd); ok {
			res.outcome, res.err = classifyConnectErr(errno)
			res.responder = from
		} else {
			res.outcome, res.err = Error, errors.New("connect: socket reported an error but none is queued")
		}
	}
	f.Close()
	return res
}

// classifyConnectErr judges an error that ended a handshake after it
// started (so it came from the network, not from local routing).
func classifyConnectErr(e syscall.Errno) (Outcome, error) {
	switch e {
	case unix.ECONNREFUSED:
		return Refused, nil
	case unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN, unix.ENONET, unix.EACCES, unix.EPROTO:
		return Unreachable, nil
	case unix.ETIMEDOUT:
		return Timeout, nil
	}
	return Error, os.NewSyscallError("connect", e)
}
