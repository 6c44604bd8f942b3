package tunnel

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// chunkSize is the size of a connection's read and write buffers: the
// largest SSH data packet OpenSSH sends, so one Read of the channel fills
// at most one buffer.
const chunkSize = 32 << 10

// conn is a net.Conn over one direct-tcpip channel.
//
// An ssh.Channel cannot be interrupted by a deadline, yet pgx relies on
// deadlines to cancel queries. So the channel is read by a pump goroutine
// into the connection's own buffer, and written by a writer goroutine from
// another; Read and Write wait for them, for their deadline, for Close and
// for the tunnel to drop, whichever comes first. The buffers are allocated
// once per connection: reads and writes allocate nothing.
type conn struct {
	t      *Tunnel
	ch     ssh.Channel
	local  net.Addr
	remote net.Addr

	closed    chan struct{}
	closeOnce sync.Once

	readDeadline, writeDeadline deadline

	// Read side. rbuf belongs to the pump until it sends on filled, then to
	// Read until Read sends on drained.
	rmu     sync.Mutex
	rbuf    []byte
	rdata   []byte // unread part of rbuf
	rerr    error  // sticky error from the pump, returned once rdata is empty
	filled  chan readResult
	drained chan struct{}

	// Write side. wbuf belongs to the writer while wbusy.
	wmu     sync.Mutex
	wbuf    []byte
	wbusy   bool
	werr    error // sticky error from the writer
	wreq    chan int
	wres    chan writeResult
	writing atomic.Bool // the writer is inside ch.Write
}

type readResult struct {
	n   int
	err error
}

type writeResult struct {
	n   int
	err error
}

// newConn wraps an open channel and starts its goroutines.
func (t *Tunnel) newConn(ch ssh.Channel, reqs <-chan *ssh.Request, target string) (*conn, error) {
	c := &conn{
		t:       t,
		ch:      ch,
		local:   t.tcp.LocalAddr(),
		remote:  targetAddr(target),
		closed:  make(chan struct{}),
		rbuf:    make([]byte, chunkSize),
		filled:  make(chan readResult),
		drained: make(chan struct{}, 1),
		wbuf:    make([]byte, chunkSize),
		wreq:    make(chan int, 1),
		wres:    make(chan writeResult, 1),
	}
	c.readDeadline.init()
	c.writeDeadline.init()
	if !t.add(3) {
		return nil, t.Err()
	}
	t.openChannels.Add(1)
	go t.handleRequests(reqs, "channel")
	go c.pump()
	go c.writer()
	return c, nil
}

// pump reads the channel into rbuf and hands each chunk to Read.
func (c *conn) pump() {
	defer c.t.wg.Done()
	for {
		n, err := c.ch.Read(c.rbuf)
		select {
		case c.filled <- readResult{n, err}:
		case <-c.closed:
			return
		case <-c.t.done:
			return
		}
		if err != nil {
			return
		}
		select {
		case <-c.drained:
		case <-c.closed:
			return
		case <-c.t.done:
			return
		}
	}
}

// writer writes wbuf to the channel when asked.
func (c *conn) writer() {
	defer c.t.wg.Done()
	for {
		select {
		case n := <-c.wreq:
			c.writing.Store(true)
			w, err := c.ch.Write(c.wbuf[:n])
			c.writing.Store(false)
			c.wres <- writeResult{w, err} // buffered; one request at a time
			if err != nil {
				return
			}
		case <-c.closed:
			return
		case <-c.t.done:
			return
		}
	}
}

// Read reads data that arrived on the channel.
func (c *conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if isClosed(c.closed) {
			return 0, c.opError("read", net.ErrClosed)
		}
		if isClosed(c.readDeadline.wait()) {
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		if len(c.rdata) > 0 {
			n := copy(p, c.rdata)
			c.rdata = c.rdata[n:]
			if len(c.rdata) == 0 && c.rerr == nil {
				c.drained <- struct{}{} // buffered; the pump waits for it
			}
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.channelError("read", c.rerr)
		}
		select {
		case r := <-c.filled:
			c.rdata, c.rerr = c.rbuf[:r.n], r.err
			if r.n == 0 && r.err == nil {
				c.drained <- struct{}{}
			}
		case <-c.readDeadline.wait():
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		case <-c.closed:
			return 0, c.opError("read", net.ErrClosed)
		case <-c.t.done:
			return 0, c.t.Err()
		}
	}
}

// Write writes p to the channel in chunks. After a deadline expires, the
// chunk in flight may still be sent; the count returned excludes it.
func (c *conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	total := 0
	for len(p) > 0 {
		if c.wbusy {
			if err := c.waitWrite(); err != nil {
				return total, err
			}
		}
		if c.werr != nil {
			return total, c.channelError("write", c.werr)
		}
		if isClosed(c.closed) {
			return total, c.opError("write", net.ErrClosed)
		}
		if isClosed(c.writeDeadline.wait()) {
			return total, c.opError("write", os.ErrDeadlineExceeded)
		}
		n := copy(c.wbuf, p)
		c.wbusy = true
		c.wreq <- n // buffered; the writer is idle
		if err := c.waitWrite(); err != nil {
			return total, err
		}
		total += n
		p = p[n:]
	}
	return total, nil
}

// waitWrite waits for the chunk in flight. Called with wmu held and wbusy.
func (c *conn) waitWrite() error {
	select {
	case r := <-c.wres:
		c.wbusy = false
		if r.err != nil {
			c.werr = r.err
			return c.channelError("write", r.err)
		}
		return nil
	case <-c.writeDeadline.wait():
		return c.opError("write", os.ErrDeadlineExceeded)
	case <-c.closed:
		return c.opError("write", net.ErrClosed)
	case <-c.t.done:
		return c.t.Err()
	}
}

// CloseWrite sends EOF to the target after the data already written.
func (c *conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wbusy {
		if err := c.waitWrite(); err != nil {
			return err
		}
	}
	if isClosed(c.closed) {
		return c.opError("close", net.ErrClosed)
	}
	if err := c.ch.CloseWrite(); err != nil {
		return c.channelError("close", err)
	}
	return nil
}

// Close closes the channel. It does not wait for the bastion.
func (c *conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.closed)
		c.t.openChannels.Add(-1)
	})
	if !first {
		return c.opError("close", net.ErrClosed)
	}
	if c.writing.Load() {
		// The writer may hold the channel's write lock while the transport
		// is blocked; sending the close message would block with it.
		go func() { _ = c.ch.Close() }()
		return nil
	}
	_ = c.ch.Close() // fails only when the tunnel is down, which closes the channel anyway
	return nil
}

// LocalAddr returns the local address of the SSH connection.
func (c *conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the target as given to DialContext.
func (c *conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines.
func (c *conn) SetDeadline(t time.Time) error {
	c.readDeadline.set(t)
	c.writeDeadline.set(t)
	return nil
}

// SetReadDeadline sets the deadline for Read, including a Read already
// waiting.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.readDeadline.set(t)
	return nil
}

// SetWriteDeadline sets the deadline for Write, including a Write already
// waiting.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.writeDeadline.set(t)
	return nil
}

// channelError maps an error of the channel: once the tunnel is down, every
// failure is the tunnel's; an end of stream is passed through as io.EOF.
func (c *conn) channelError(op string, err error) error {
	if terr := c.t.Err(); terr != nil {
		return terr
	}
	if isClosed(c.closed) {
		return c.opError(op, net.ErrClosed)
	}
	if op == "read" && errors.Is(err, io.EOF) {
		return err
	}
	return c.opError(op, err)
}

func (c *conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "ssh", Source: c.local, Addr: c.remote, Err: err}
}

// targetAddr is the address of a channel's target as the bastion sees it.
type targetAddr string

// Network returns "tcp".
func (a targetAddr) Network() string { return "tcp" }

// String returns the target's host:port.
func (a targetAddr) String() string { return string(a) }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// deadline is a settable deadline whose channel closes when it passes, in
// the manner of net.Pipe's.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline has passed
}

func (d *deadline) init() { d.cancel = make(chan struct{}) }

// set arms the deadline; the zero time disarms it.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait until it closed cancel
	}
	d.timer = nil
	expired := isClosed(d.cancel)
	if t.IsZero() {
		if expired {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if expired {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !expired {
		close(d.cancel)
	}
}

// wait returns a channel that is closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}
