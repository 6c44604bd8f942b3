package tunnel

import "net"

// Pumping reports whether c, a connection from DialContext, still reads
// through its pump goroutine (for tests of WriteTo's take-over).
func Pumping(c net.Conn) bool {
	cc := c.(*conn)
	cc.rmu.Lock()
	defer cc.rmu.Unlock()
	return cc.pumping
}
