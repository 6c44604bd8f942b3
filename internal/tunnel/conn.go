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

// Buffer sizes of a connection.
const (
	// readChunk is the size of each of the two read buffers of the pump
	// behind Read: the largest SSH data packet OpenSSH sends (32 KiB).
	readChunk = 32 << 10
	// copyChunk is the buffer of WriteTo. Larger than a packet, so that
	// when several packets are waiting, one read of the channel takes them
	// all and one write passes them on (fewer system calls in bulk).
	copyChunk = 128 << 10
	// writeChunk is the buffer of the writer goroutine and of ReadFrom: a
	// packet's worth.
	writeChunk = 32 << 10
)

// conn is a net.Conn over one direct-tcpip channel.
//
// An ssh.Channel cannot be interrupted: a Read waits for data, EOF or the
// tunnel's end, and a Write waits for the bastion to take the data (which
// a bastion that stopped answering, or a target that stopped reading,
// never does). Yet pgx relies on deadlines to cancel queries, and Close
// must release a caller in every case. So no caller ever waits inside the
// channel: goroutines of the connection do, and the caller waits for them,
// its deadline, Close or the tunnel's end, whichever comes first. Each
// hand-off between goroutines costs a wake-up, which is most of the
// tunnel's CPU per round trip, so there are as few as the semantics allow:
//
//   - Read takes data from a pump goroutine that reads the channel into
//     two buffers in turn (one filled while Read drains the other, so the
//     pump is not woken to go on).
//   - Write hands data to a writer goroutine and returns without waiting
//     for the channel to take it, as a socket does with its send buffer.
//   - WriteTo and ReadFrom (used by io.Copy and the local proxy) have a
//     goroutine copy between the channel and the other side by itself,
//     with no hand-off per chunk.
//
// Goroutines and buffers are made on first use: a proxied connection has
// only WriteTo's copier and ReadFrom's feeder.
type conn struct {
	t      *Tunnel
	ch     ssh.Channel
	local  net.Addr
	remote net.Addr

	closed    chan struct{}
	closeOnce sync.Once

	readDeadline, writeDeadline deadline

	// aborted is set when a deadline passed during a WriteTo and the
	// channel was closed to end the copier's read.
	aborted atomic.Bool

	// Read side; rmu serialises Read and WriteTo.
	rmu     sync.Mutex
	pumping bool   // the pump has been started and not yet handed over
	rdata   []byte // unread part of rchunk
	rchunk  []byte // the pump buffer being drained, returned to free when empty
	rerr    error  // sticky error from the channel, returned once rdata is empty
	filled  chan readResult
	free    chan []byte
	// stopPump asks the pump to stop after its read in progress;
	// pumpDone is closed when it has.
	stopPump, pumpDone chan struct{}

	// Write side; wmu serialises Write, ReadFrom and CloseWrite.
	wmu           sync.Mutex
	wbuf          []byte // the writer goroutine's buffer, made with it
	wbusy         bool   // the writer owns wbuf: a chunk is in flight
	werr          error  // sticky error from writing to the channel
	wreq          chan int
	wres          chan writeResult
	writerStarted atomic.Bool
	writing       atomic.Bool // the writer or a feeder is inside ch.Write
}

type readResult struct {
	buf []byte // a pump buffer, data in buf[:n]
	n   int
	err error
}

type writeResult struct {
	n   int
	err error
}

// newConn wraps an open channel.
func (t *Tunnel) newConn(ch ssh.Channel, reqs <-chan *ssh.Request, target string) (*conn, error) {
	c := &conn{
		t:      t,
		ch:     ch,
		local:  t.tcp.LocalAddr(),
		remote: targetAddr(target),
		closed: make(chan struct{}),
	}
	c.readDeadline.init()
	c.writeDeadline.init()
	if !t.add(1) {
		return nil, t.Err()
	}
	t.openChannels.Add(1)
	t.cfg.Observer.ChannelOpened()
	go t.handleRequests(reqs, "channel")
	return c, nil
}

// startPump starts the pump. Called with rmu held.
func (c *conn) startPump() error {
	if !c.t.add(1) {
		return c.t.Err()
	}
	c.pumping = true
	c.stopPump = make(chan struct{})
	c.pumpDone = make(chan struct{})
	c.filled = make(chan readResult, 2)
	c.free = make(chan []byte, 2)
	c.free <- make([]byte, readChunk)
	c.free <- make([]byte, readChunk)
	go c.pump()
	return nil
}

// pump reads the channel into a free buffer and hands it to Read, until
// the channel ends or WriteTo takes over. There are two buffers and filled
// holds two results, so the hand-off never blocks.
func (c *conn) pump() {
	defer c.t.wg.Done()
	defer close(c.pumpDone)
	for {
		var buf []byte
		select {
		case buf = <-c.free:
		case <-c.stopPump:
			return
		case <-c.closed:
			return
		case <-c.t.done:
			return
		}
		if isClosed(c.stopPump) {
			return
		}
		n, err := c.ch.Read(buf)
		c.filled <- readResult{buf, n, err}
		if err != nil {
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
			if len(c.rdata) == 0 {
				c.release()
			}
			return n, nil
		}
		if c.rerr != nil {
			return 0, c.channelError("read", c.rerr)
		}
		if !c.pumping {
			if err := c.startPump(); err != nil {
				return 0, err
			}
		}
		select {
		case r := <-c.filled:
			c.rdata, c.rchunk, c.rerr = r.buf[:r.n], r.buf, r.err
			if r.n == 0 {
				c.release()
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

// release gives the drained pump buffer back. Called with rmu held.
func (c *conn) release() {
	if c.rchunk != nil {
		c.free <- c.rchunk // buffered for both buffers: never blocks
		c.rchunk = nil
	}
}

// WriteTo copies the channel's data to w until the channel ends (nil at
// EOF), Close, the tunnel's end or a failed write to w. It has the
// channel read by a copier goroutine that writes to w itself, so that bulk
// data passes without a goroutine hand-off per chunk; w is not written to
// after WriteTo returns. A read deadline set before WriteTo is obeyed
// exactly, as by Read; one that passes during it also ends it, and closes
// the channel (data may have been read from it but not written to w).
//
// After Read (a protocol's start read by a relay, say), WriteTo first
// writes what Read left, then stops the pump once its read in progress
// returns, and copies by itself from then on.
func (c *conn) WriteTo(w io.Writer) (int64, error) {
	c.rmu.Lock()
	if c.readDeadline.armed.Load() {
		// A deadline is set: copy through Read.
		c.rmu.Unlock()
		return c.copyByRead(w)
	}
	defer c.rmu.Unlock()
	var handed int64
	if c.pumping || len(c.rdata) > 0 || c.rerr != nil {
		n, done, err := c.takeOver(w)
		if done || err != nil {
			return n, err
		}
		handed = n
	}
	if isClosed(c.closed) {
		return handed, c.opError("read", net.ErrClosed)
	}
	if !c.t.add(1) {
		return 0, c.t.Err()
	}
	cp := &copier{c: c, w: w, done: make(chan struct{})}
	go cp.run()

	select {
	case <-cp.done:
		if cp.readErr != nil {
			c.rerr = cp.readErr
		}
		if cp.writeErr != nil {
			return handed + cp.n, cp.writeErr
		}
		if cp.readErr == nil || errors.Is(cp.readErr, io.EOF) {
			return handed + cp.n, nil
		}
		return handed + cp.n, c.channelError("read", cp.readErr)
	case <-c.readDeadline.wait():
		n := cp.stop()
		c.rerr = os.ErrDeadlineExceeded
		c.abort()
		return handed + n, c.opError("read", os.ErrDeadlineExceeded)
	case <-c.closed:
		return handed + cp.stop(), c.opError("read", net.ErrClosed)
	case <-c.t.done:
		return handed + cp.stop(), c.t.Err()
	}
}

// takeOver ends reading through the pump for WriteTo: it writes the data
// Read left and what the pump read before it stopped, and reports done
// when the stream ended (or failed) on the way, with WriteTo's result.
// Otherwise the pump has stopped and the channel is WriteTo's to read.
// Called with rmu held.
func (c *conn) takeOver(w io.Writer) (n int64, done bool, err error) {
	// give passes one result of the pump (or what Read left) to w.
	give := func(data []byte, rerr error) (bool, error) {
		if len(data) > 0 {
			m, werr := w.Write(data)
			n += int64(m)
			if werr == nil && m < len(data) {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return true, werr
			}
		}
		if rerr == nil {
			return false, nil
		}
		c.rerr = rerr
		if errors.Is(rerr, io.EOF) {
			return true, nil
		}
		return true, c.channelError("read", rerr)
	}
	// What Read left lies in the pump's buffer: write it before that
	// buffer goes back to the pump, which may read into it at once.
	data, rerr := c.rdata, c.rerr
	c.rdata = nil
	done, gerr := give(data, rerr)
	c.release()
	if done {
		return n, true, gerr
	}
	if !c.pumping {
		return n, false, nil
	}
	close(c.stopPump)
	for {
		select {
		case r := <-c.filled:
			if done, err := give(r.buf[:r.n], r.err); done {
				return n, true, err
			}
			continue
		case <-c.pumpDone:
		case <-c.readDeadline.wait():
			return n, true, c.opError("read", os.ErrDeadlineExceeded)
		case <-c.closed:
			return n, true, c.opError("read", net.ErrClosed)
		case <-c.t.done:
			return n, true, c.t.Err()
		}
		// The pump has stopped: what it read last is in filled.
		select {
		case r := <-c.filled:
			if done, err := give(r.buf[:r.n], r.err); done {
				return n, true, err
			}
			continue
		default:
		}
		c.pumping = false
		return n, false, nil
	}
}

// copyByRead is WriteTo through Read.
func (c *conn) copyByRead(w io.Writer) (int64, error) {
	buf := make([]byte, readChunk)
	var total int64
	for {
		n, err := c.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// copier is the goroutine behind one WriteTo.
type copier struct {
	c    *conn
	w    io.Writer
	done chan struct{} // closed when run returns

	mu       sync.Mutex // held while writing to w; stop takes it
	stopped  bool
	n        int64
	readErr  error
	writeErr error
}

func (cp *copier) run() {
	defer cp.c.t.wg.Done()
	defer close(cp.done)
	buf := make([]byte, copyChunk)
	for {
		n, err := cp.c.ch.Read(buf)
		cp.mu.Lock()
		if cp.stopped {
			cp.mu.Unlock()
			return
		}
		if n > 0 {
			m, werr := cp.w.Write(buf[:n])
			cp.n += int64(m)
			if werr == nil && m < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				cp.writeErr = werr
				cp.mu.Unlock()
				return
			}
		}
		if err != nil {
			cp.readErr = err
			cp.mu.Unlock()
			return
		}
		cp.mu.Unlock()
	}
}

// stop makes the copier leave w alone (waiting for a write to w in
// progress) and returns the bytes written. The copier itself ends when
// its read of the channel returns.
func (cp *copier) stop() int64 {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.stopped = true
	return cp.n
}

// Write hands p to the writer goroutine in chunks, as a socket takes data
// into its send buffer: it returns once the last chunk is handed over,
// without waiting for the channel to take it, and waits only while an
// earlier chunk is still being written. A failure to write a chunk is
// returned by the next Write (or CloseWrite). A deadline or Close ends the
// wait; the chunk then in flight may still be sent.
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
		if err := c.writable(); err != nil {
			return total, err
		}
		if c.wreq == nil {
			if err := c.startWriter(); err != nil {
				return total, err
			}
		}
		n := copy(c.wbuf, p)
		c.wbusy = true
		c.wreq <- n // buffered; the writer has finished the previous chunk
		total += n
		p = p[n:]
	}
	return total, nil
}

// writable reports why the channel cannot be written to, if it cannot.
// Called with wmu held and no chunk in flight.
func (c *conn) writable() error {
	if c.werr != nil {
		return c.channelError("write", c.werr)
	}
	if isClosed(c.closed) {
		return c.opError("write", net.ErrClosed)
	}
	if isClosed(c.writeDeadline.wait()) {
		return c.opError("write", os.ErrDeadlineExceeded)
	}
	return nil
}

// startWriter starts the writer goroutine. Called with wmu held.
func (c *conn) startWriter() error {
	if !c.t.add(1) {
		return c.t.Err()
	}
	c.wbuf = make([]byte, writeChunk)
	c.wreq = make(chan int, 1)
	c.wres = make(chan writeResult, 1)
	c.writerStarted.Store(true)
	go c.writer()
	return nil
}

// writer writes the chunks Write hands it. After Close it writes the chunk
// handed over before, if any, and then closes the channel, so that data
// written just before Close (such as PostgreSQL's Terminate message) is
// delivered, as by a socket.
func (c *conn) writer() {
	defer c.t.wg.Done()
	write := func(n int) {
		c.writing.Store(true)
		w, err := c.ch.Write(c.wbuf[:n])
		c.writing.Store(false)
		c.wres <- writeResult{w, err} // buffered; one chunk at a time
	}
	for {
		select {
		case n := <-c.wreq:
			write(n)
		case <-c.closed:
			select {
			case n := <-c.wreq:
				write(n)
			default:
			}
			_ = c.ch.Close()
			return
		case <-c.t.done:
			return
		}
	}
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

// ReadFrom copies r to the channel until r's EOF (nil) or an error. A
// feeder goroutine reads r and writes to the channel itself, without a
// hand-off per chunk; the caller waits for it, Close, the tunnel's end or
// its write deadline. r is not read after ReadFrom returns, except that a
// read already in progress completes (its data is then dropped, as when a
// plain copy loop finds the connection closed). A write deadline set
// before ReadFrom is obeyed as by Write; one that passes during it ends it
// and leaves the connection unable to write (the feeder may still be
// writing).
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wbusy {
		if err := c.waitWrite(); err != nil {
			return 0, err
		}
	}
	if err := c.writable(); err != nil {
		return 0, err
	}
	if c.writeDeadline.armed.Load() {
		return c.readFromByWrite(r)
	}
	if !c.t.add(1) {
		return 0, c.t.Err()
	}
	f := &feeder{c: c, r: r, done: make(chan struct{})}
	go f.run()

	select {
	case <-f.done:
		if f.writeErr != nil {
			c.werr = f.writeErr
			return f.n.Load(), c.channelError("write", f.writeErr)
		}
		if f.readErr != nil && !errors.Is(f.readErr, io.EOF) {
			return f.n.Load(), f.readErr
		}
		return f.n.Load(), nil
	case <-c.writeDeadline.wait():
		f.stop()
		c.werr = os.ErrDeadlineExceeded
		return f.n.Load(), c.opError("write", os.ErrDeadlineExceeded)
	case <-c.closed:
		f.stop()
		return f.n.Load(), c.opError("write", net.ErrClosed)
	case <-c.t.done:
		f.stop()
		return f.n.Load(), c.t.Err()
	}
}

// readFromByWrite is ReadFrom through Write. Called with wmu held.
func (c *conn) readFromByWrite(r io.Reader) (int64, error) {
	buf := make([]byte, writeChunk)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			c.wmu.Unlock()
			m, werr := c.Write(buf[:n])
			c.wmu.Lock()
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// feeder is the goroutine behind one ReadFrom.
type feeder struct {
	c       *conn
	r       io.Reader
	done    chan struct{} // closed when run returns
	stopped atomic.Bool
	n       atomic.Int64

	readErr, writeErr error // set before done is closed
}

func (f *feeder) run() {
	defer f.c.t.wg.Done()
	defer close(f.done)
	buf := make([]byte, writeChunk)
	for !f.stopped.Load() {
		n, err := f.r.Read(buf)
		if f.stopped.Load() {
			return
		}
		if n > 0 {
			f.c.writing.Store(true)
			m, werr := f.c.ch.Write(buf[:n])
			f.c.writing.Store(false)
			f.n.Add(int64(m))
			if werr != nil {
				f.writeErr = werr
				return
			}
		}
		if err != nil {
			f.readErr = err
			return
		}
	}
}

// stop makes the feeder read no more.
func (f *feeder) stop() { f.stopped.Store(true) }

// abort closes the channel after a deadline passed during a WriteTo; the
// connection then fails every Read with a time-out.
func (c *conn) abort() {
	if c.aborted.Swap(true) {
		return
	}
	go func() { _ = c.ch.Close() }() // the writer may hold the channel's write lock
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

// Close closes the channel. It does not wait for the bastion, nor for a
// write in progress: when the writer goroutine runs, it closes the channel
// after the chunk it was handed.
func (c *conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.closed)
		c.t.openChannels.Add(-1)
		c.t.cfg.Observer.ChannelClosed()
	})
	if !first {
		return c.opError("close", net.ErrClosed)
	}
	if c.writerStarted.Load() {
		return nil
	}
	if c.writing.Load() {
		// A ReadFrom's feeder may hold the channel's write lock while the
		// transport is blocked; sending the close message would block
		// with it.
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

// SetReadDeadline sets the deadline for Read and WriteTo, including one
// already waiting.
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
	if c.aborted.Load() || errors.Is(err, os.ErrDeadlineExceeded) {
		return c.opError(op, os.ErrDeadlineExceeded)
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
	// armed is true while a deadline is set (passed or not); read without
	// the lock.
	armed atomic.Bool
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
		d.armed.Store(false)
		if expired {
			d.cancel = make(chan struct{})
		}
		return
	}
	d.armed.Store(true)
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
