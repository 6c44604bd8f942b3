package tunnel

import (
	"net"

	"github.com/pgrelay/pgrelay/internal/sockio"
)

// Pumping reports whether c, a connection from DialContext, still reads
// through its pump goroutine (for tests of WriteTo's take-over).
func Pumping(c net.Conn) bool {
	cc := c.(*conn)
	cc.rmu.Lock()
	defer cc.rmu.Unlock()
	return cc.pumping
}

// TransportDirect reports whether t's SSH transport reads and writes the
// bastion's socket directly (internal/sockio).
func TransportDirect(t *Tunnel) bool {
	return sockio.Direct(t.transport.Conn)
}
