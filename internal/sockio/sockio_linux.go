package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// maxIO bounds one read or write, as the net package does.
const maxIO = 1 << 30

// Wrap returns c with direct reads and writes when c is a TCP connection,
// and c itself otherwise. The result keeps c's deadlines, half-close
// (CloseWrite) and Close.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &conn{Conn: tc, tcp: tc, rc: rc}
}

// Direct reports whether c reads and writes directly (a connection from
// Wrap on Linux).
func Direct(c net.Conn) bool {
	_, ok := c.(*conn)
	return ok
}

// conn is a TCP connection whose Read and Write are direct. It embeds
// the net.Conn interface rather than *net.TCPConn, so that it has no
// ReadFrom or WriteTo that would bypass them.
type conn struct {
	net.Conn
	tcp *net.TCPConn
	rc  syscall.RawConn
}

// CloseWrite shuts down the writing side of the connection.
func (c *conn) CloseWrite() error { return c.tcp.CloseWrite() }

// SyscallConn returns the connection's raw connection, for socket options.
func (c *conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// Read reads once, waiting for data through the netpoller.
func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(p) > maxIO {
		p = p[:maxIO]
	}
	var n int
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case 0:
				n = int(r)
				return true
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false // wait until readable
			default:
				errno = e
				return true
			}
		}
	})
	if err != nil {
		return 0, c.opError("read", err)
	}
	if errno != 0 {
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p, waiting for room through the netpoller.
func (c *conn) Write(p []byte) (int, error) {
	n := 0
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for n < len(p) {
			chunk := p[n:min(len(p), n+maxIO)]
			r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&chunk[0])), uintptr(len(chunk)))
			switch e {
			case 0:
				n += int(r)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // wait until writable
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err != nil {
		return n, c.opError("write", err)
	}
	if errno != 0 {
		return n, c.opError("write", os.NewSyscallError("write", errno))
	}
	return n, nil
}

// opError reports err as the net package does for op: an *net.OpError
// with the connection's addresses (RawConn's own name the operation
// "raw-read" and "raw-write").
func (c *conn) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
