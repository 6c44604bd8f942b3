//go:build !linux

package tunnel

import "net"

// quickAckFunc returns nil: TCP_QUICKACK is Linux's.
func quickAckFunc(net.Conn) func() { return nil }
