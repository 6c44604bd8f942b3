package bench

import "syscall"

// setQuickAck puts a socket in TCP quick-ack mode.
func setQuickAck(fd uintptr) {
	_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
}
