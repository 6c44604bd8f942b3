package tunnel

import (
	"net"
	"syscall"
)

// quickAckFunc returns a function that puts c's socket in TCP quick-ack
// mode (acknowledge received data at once instead of delaying), or nil
// when c is not a socket.
func quickAckFunc(c net.Conn) func() {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func() {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
}
