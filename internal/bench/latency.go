package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// latencyChunk is the most a latency relay reads at once.
const latencyChunk = 64 << 10

// latencyQueue is how many chunks may be on their way in one direction of
// one connection before the relay stops reading: 64 MiB at most, more
// than the bandwidth-delay product of loopback at the delays benchmarked,
// so the relay does not limit throughput, while a reader that stops
// reading still stops the sender.
const latencyQueue = 1024

// LatencyRelay is a TCP relay on loopback that delays every byte by a
// fixed one-way delay in each direction, so that a server on loopback
// looks as far away as one across a WAN (round trip 2 × delay). It is the
// bench's stand-in for a kernel qdisc (netem), which this machine lacks.
//
// Each direction of each connection has a reader that stamps what it
// reads with the time it is due (now + delay) and a writer that passes it
// on no earlier than that, in order: bandwidth is loopback's, latency is
// the delay. An end of stream is passed on (as a half-close) with the same
// delay. The relay terminates TCP on both sides and acknowledges what it
// reads at once (TCP_QUICKACK), so it adds no delayed-acknowledgement
// stalls of its own; the interplay of Nagle's algorithm and delayed
// acknowledgements across a real long path is not modelled.
//
// It counts, per connection, the times the client starts sending after
// the server last sent (its flights): for a request-response exchange
// such as an SSH or PostgreSQL handshake, the number of round trips.
//
// Its methods are safe for concurrent use.
type LatencyRelay struct {
	ln       net.Listener
	upstream string
	delay    time.Duration

	flights     atomic.Int64
	connections atomic.Int64
	bytesUp     atomic.Int64
	bytesDown   atomic.Int64

	mu     sync.Mutex
	closed bool
	conns  map[*latencyConn]struct{}
	wg     sync.WaitGroup
	bufs   sync.Pool
}

// LatencyStats are a relay's counters since it started.
type LatencyStats struct {
	// Connections counts the connections accepted.
	Connections int64
	// Flights counts the client's flights: each time a client sent data
	// after the last data of its connection came from the server (the
	// first data of a connection included).
	Flights int64
	// BytesUp and BytesDown count the bytes passed on from clients to the
	// upstream and back.
	BytesUp, BytesDown int64
}

// NewLatencyRelay listens on 127.0.0.1 and a free port and relays each
// connection to upstream ("host:port") with delay each way. Close stops it.
func NewLatencyRelay(upstream string, delay time.Duration) (*LatencyRelay, error) {
	if delay < 0 {
		return nil, fmt.Errorf("latency relay to %s: delay %v is negative", upstream, delay)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("latency relay to %s: listen: %w", upstream, err)
	}
	r := &LatencyRelay{ln: ln, upstream: upstream, delay: delay, conns: map[*latencyConn]struct{}{}}
	r.bufs.New = func() any {
		b := make([]byte, latencyChunk)
		return &b
	}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr returns the address clients connect to, 127.0.0.1:PORT.
func (r *LatencyRelay) Addr() string { return r.ln.Addr().String() }

// Port returns the port clients connect to.
func (r *LatencyRelay) Port() int { return r.ln.Addr().(*net.TCPAddr).Port }

// Delay returns the one-way delay.
func (r *LatencyRelay) Delay() time.Duration { return r.delay }

// Stats returns the counters.
func (r *LatencyRelay) Stats() LatencyStats {
	return LatencyStats{
		Connections: r.connections.Load(),
		Flights:     r.flights.Load(),
		BytesUp:     r.bytesUp.Load(),
		BytesDown:   r.bytesDown.Load(),
	}
}

// Close stops accepting, closes every connection and waits for the
// relay's goroutines.
func (r *LatencyRelay) Close() error {
	r.mu.Lock()
	r.closed = true
	conns := make([]*latencyConn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	err := r.ln.Close()
	for _, c := range conns {
		c.close()
	}
	r.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (r *LatencyRelay) accept() {
	defer r.wg.Done()
	for {
		client, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.connections.Add(1)
		c := &latencyConn{r: r, client: client}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			_ = client.Close()
			return
		}
		r.conns[c] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go c.serve()
	}
}

// latencyConn is one relayed connection.
type latencyConn struct {
	r      *LatencyRelay
	client net.Conn

	mu       sync.Mutex
	upstream net.Conn
	closed   bool
	// lastUp is true when the last data read came from the client.
	lastUp  bool
	started bool
}

// serve dials the upstream (right away: the client's bytes wait in the
// queue meanwhile, and reach the upstream delay after they were sent) and
// relays both ways until both are done.
func (c *latencyConn) serve() {
	defer c.r.wg.Done()
	defer func() {
		c.r.mu.Lock()
		delete(c.r.conns, c)
		c.r.mu.Unlock()
	}()
	defer c.close()
	up, err := net.DialTimeout("tcp", c.r.upstream, 10*time.Second)
	if err != nil {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = up.Close()
		return
	}
	c.upstream = up
	c.mu.Unlock()
	quickAck(c.client)
	quickAck(up)

	var wg sync.WaitGroup
	wg.Go(func() { c.direction(c.client, up, true) })
	wg.Go(func() { c.direction(up, c.client, false) })
	wg.Wait()
}

// chunk is data on its way, or the end of the stream (data nil).
type chunk struct {
	buf  *[]byte
	n    int
	due  time.Time
	err  error // the read's error, with the last chunk
	last bool
}

// direction relays src to dst: a reader stamps chunks, a writer delivers
// them when due.
func (c *latencyConn) direction(src, dst net.Conn, up bool) {
	q := make(chan chunk, latencyQueue)
	go func() {
		defer close(q)
		for {
			bp := c.r.bufs.Get().(*[]byte)
			n, err := src.Read(*bp)
			now := time.Now()
			if n > 0 {
				c.arrived(up)
				quickAck(src)
			}
			last := err != nil
			q <- chunk{buf: bp, n: n, due: now.Add(c.r.delay), err: err, last: last}
			if last {
				return
			}
		}
	}()
	var failed bool
	for ch := range q {
		if !failed {
			if d := time.Until(ch.due); d > 0 {
				time.Sleep(d)
			}
			if ch.n > 0 {
				if _, err := dst.Write((*ch.buf)[:ch.n]); err != nil {
					failed = true
					c.close()
				} else if up {
					c.r.bytesUp.Add(int64(ch.n))
				} else {
					c.r.bytesDown.Add(int64(ch.n))
				}
			}
			if ch.last && !failed {
				if errors.Is(ch.err, io.EOF) {
					if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
						c.r.bufs.Put(ch.buf)
						continue
					}
				}
				failed = true
				c.close()
			}
		}
		c.r.bufs.Put(ch.buf)
	}
}

// arrived records data read in one direction, counting the client's
// flights.
func (c *latencyConn) arrived(up bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if up && (!c.started || !c.lastUp) {
		c.r.flights.Add(1)
	}
	c.started = true
	c.lastUp = up
}

// close closes both sides, once.
func (c *latencyConn) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	up := c.upstream
	c.mu.Unlock()
	_ = c.client.Close()
	if up != nil {
		_ = up.Close()
	}
}

// quickAck asks the kernel to acknowledge received data at once (Linux;
// elsewhere, and on failure, nothing happens). The kernel leaves quick-ack
// mode by itself, so it is renewed after every read.
func quickAck(c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(setQuickAck)
}
