package prober

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// openICMPSocket opens an IPv4 ICMP socket of the given mode (ICMPRaw or
// ICMPPing), sized to buf bytes each way and bound to src if valid. For
// ping sockets it also returns the echo identifier the kernel assigned.
//
// We open the socket ourselves rather than with icmp.ListenPacket because
// that returns a conn whose buffers cannot be resized, and the default 208
// KiB overflows within milliseconds at 100k probes/s.
func openICMPSocket(mode ICMPMode, src netip.Addr, buf int) (net.PacketConn, uint16, error) {
	typ := unix.SOCK_RAW
	if mode == ICMPPing {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return nil, 0, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), "icmp")
	defer f.Close() // net.FilePacketConn dups the descriptor
	setBuffers(fd, buf)
	if mode == ICMPPing {
		// ICMP errors about our echoes reach a ping socket only
		// through its error queue.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVERR, 1); err != nil {
			return nil, 0, os.NewSyscallError("setsockopt IP_RECVERR", err)
		}
	}
	var sa unix.SockaddrInet4
	if src.IsValid() {
		sa.Addr = src.Unmap().As4()
	}
	if mode == ICMPPing || src.IsValid() {
		// Port 0 on a ping socket asks the kernel for a free identifier.
		if err := unix.Bind(fd, &sa); err != nil {
			return nil, 0, os.NewSyscallError("bind", err)
		}
	}
	var id uint16
	if mode == ICMPPing {
		got, err := unix.Getsockname(fd)
		if err != nil {
			return nil, 0, os.NewSyscallError("getsockname", err)
		}
		in4, ok := got.(*unix.SockaddrInet4)
		if !ok {
			return nil, 0, fmt.Errorf("getsockname: unexpected %T", got)
		}
		id = uint16(in4.Port)
	}
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, 0, err
	}
	return pc, id, nil
}

// setBuffers asks for buf bytes of socket buffer each way: forced past
// net.core.[rw]mem_max when we have CAP_NET_ADMIN, else as much as the
// sysctl allows. A smaller buffer is not an error, only slower.
func setBuffers(fd, buf int) {
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], buf) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], buf)
		}
	}
}

// icmpError is an ICMP error a ping socket's error queue reported.
type icmpError struct {
	dst, from [4]byte // the probe's destination; the router that reported it
	typ, code uint8
	quoted    []byte // the echo request as quoted (header, maybe payload)
}

// readErrQueue drains the error queue of a ping socket without blocking,
// calling fn for each ICMP error. It is safe to call while another
// goroutine reads the socket: Control does not take the read lock, and the
// error queue is separate from the receive queue.
func readErrQueue(rc syscall.RawConn, buf, oob []byte, fn func(*icmpError)) error {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		for {
			n, oobn, _, sa, e := unix.Recvmsg(int(fd), buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if e != nil {
				if e != unix.EAGAIN {
					err = os.NewSyscallError("recvmsg errqueue", e)
				}
				return
			}
			in4, ok := sa.(*unix.SockaddrInet4)
			if !ok {
				continue
			}
			cms, e := unix.ParseSocketControlMessage(oob[:oobn])
			if e != nil {
				continue
			}
			for _, cm := range cms {
				if cm.Header.Level != unix.IPPROTO_IP || cm.Header.Type != unix.IP_RECVERR {
					continue
				}
				// struct sock_extended_err (16 bytes), then the
				// offender's struct sockaddr_in (SO_EE_OFFENDER).
				d := cm.Data
				if len(d) < 16+8 || d[4] != unix.SO_EE_ORIGIN_ICMP {
					continue
				}
				ie := icmpError{dst: in4.Addr, typ: d[5], code: d[6], quoted: buf[:n]}
				copy(ie.from[:], d[16+4:16+8])
				fn(&ie)
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}
