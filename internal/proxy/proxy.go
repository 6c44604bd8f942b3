// Package proxy serves a local TCP endpoint whose connections are forwarded
// to connections made by a dial function, such as a channel through an SSH
// tunnel. It lets tools that cannot take a custom dialer (dbt, psql) use a
// tunnel unchanged.
//
// The listener, the dialer and the byte-copy loop are kept apart: [Proxy]
// owns the accept loop and the set of active sessions, a [DialFunc] makes
// the upstream connection under its own time-out, and pipe copies both
// ways with pooled buffers.
//
// A [Handshake] (see [WithHandshake]) may take over the start of each
// session, such as the PostgreSQL startup phase that internal/relay reads;
// the bytes after it are copied by the same loop.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/pgrelay/pgrelay/internal/sockio"
)

// DefaultDialTimeout bounds each upstream dial unless [WithDialTimeout]
// says otherwise.
const DefaultDialTimeout = 30 * time.Second

// bufferSize is the size of a pooled copy buffer.
const bufferSize = 32 << 10

// DialFunc opens the upstream connection for one accepted client.
type DialFunc func(ctx context.Context) (net.Conn, error)

// Option adjusts a [Proxy].
type Option func(*Proxy)

// WithDialTimeout sets the time-out of each upstream dial.
func WithDialTimeout(d time.Duration) Option {
	return func(p *Proxy) {
		if d > 0 {
			p.dialTimeout = d
		}
	}
}

// WithHandshake has h start every session: it dials the upstream itself
// (with the dial function it is given, which applies the proxy's dial
// time-out) and returns the two connections to copy between. The proxy
// still owns the session: Close closes the client connection, which ends a
// handshake in progress, and the context h gets is done when the proxy
// closes.
func WithHandshake(h Handshake) Option {
	return func(p *Proxy) { p.handshake = h }
}

// Handshake starts a session for an accepted client connection. It returns
// the session to copy, or nil and a nil error when there is nothing to
// copy and nothing to report: it served the client by itself, or the
// client left (the proxy then closes the client connection). On error
// the proxy closes the client connection; the handshake closes any
// upstream connection it opened.
type Handshake func(ctx context.Context, client net.Conn, dial DialFunc) (*Splice, error)

// Splice is a session whose start a [Handshake] completed: the proxy
// copies between Client and Upstream as it does without a handshake.
type Splice struct {
	// Client is the client side to copy from and to: the accepted
	// connection or a wrapper of it (such as a TLS server connection).
	Client net.Conn
	// Upstream is the upstream side.
	Upstream net.Conn
	// Ended, when set, is called as soon as the copy in one direction
	// ends, on that direction's goroutine and before the proxy closes or
	// half-closes anything: fromClient tells the direction (client to
	// upstream, or back) and err is the copy's error, nil at EOF. It is
	// called once for each direction.
	Ended func(fromClient bool, err error)
	// Closed, when set, is called once both directions have ended and
	// both sides are closed, with the bytes copied each way.
	Closed func(toUp, toClient int64)
	// CloseBoth makes the first direction to end close both sides, even
	// at EOF, instead of half-closing the other: for protocols such as
	// PostgreSQL's, where neither side goes on once the other is done.
	CloseBoth bool
}

// Proxy accepts connections on a listener and forwards each to a fresh
// upstream connection.
type Proxy struct {
	ln          net.Listener
	dial        DialFunc
	log         *slog.Logger
	dialTimeout time.Duration
	handshake   Handshake
	bufs        sync.Pool

	closing   chan struct{}
	closeOnce sync.Once
	stopped   context.Context // done once Close has begun
	stop      context.CancelFunc

	mu        sync.Mutex
	serving   bool
	accepting bool // false once StopAccepting (or Close) has begun
	sessions  map[*session]struct{}
	wg        sync.WaitGroup // sessions; Add only under mu while not closing
}

// New returns a proxy that accepts on ln and dials with dial. The proxy
// owns ln: Close closes it. A nil logger discards.
func New(ln net.Listener, dial DialFunc, logger *slog.Logger, opts ...Option) *Proxy {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{
		ln:          ln,
		dial:        dial,
		log:         logger.With(slog.String("listen", ln.Addr().String())),
		dialTimeout: DefaultDialTimeout,
		closing:     make(chan struct{}),
		accepting:   true,
		sessions:    make(map[*session]struct{}),
	}
	p.stopped, p.stop = context.WithCancel(context.Background())
	p.bufs.New = func() any {
		b := make([]byte, bufferSize)
		return &b
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Addr returns the address the proxy listens on.
func (p *Proxy) Addr() net.Addr { return p.ln.Addr() }

// Active returns the number of client connections being served.
func (p *Proxy) Active() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.sessions)
}

// Serve accepts connections until ctx is done or Close is called, and then
// closes the proxy (see Close). It returns nil on such a clean shutdown and
// the accept error otherwise. Serve may be called once.
func (p *Proxy) Serve(ctx context.Context) error {
	p.mu.Lock()
	if p.serving {
		p.mu.Unlock()
		return errors.New("proxy: Serve called twice")
	}
	p.serving = true
	p.mu.Unlock()

	stop := context.AfterFunc(ctx, func() { _ = p.Close() })
	defer stop()

	p.log.Info("proxy listening")
	var backoff time.Duration
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if isClosed(p.closing) {
				return nil
			}
			if !p.isAccepting() {
				// StopAccepting: the open sessions go on until Close.
				<-p.closing
				return nil
			}
			var ne net.Error
			if (errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a passing error: wait and retry, as
				// net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.log.Warn("proxy accept failed; retrying", slog.Any("error", err), slog.Duration("backoff", backoff))
				select {
				case <-time.After(backoff):
					continue
				case <-p.closing:
					return nil
				}
			}
			_ = p.Close()
			return fmt.Errorf("proxy on %s: accept: %w", p.ln.Addr(), err)
		}
		backoff = 0
		// Direct reads and writes on the data path (see internal/sockio).
		client = sockio.Wrap(client)
		s := &session{client: client, opened: time.Now()}
		if !p.track(s) {
			_ = client.Close()
			<-p.closing // or StopAccepting: the open sessions go on until Close
			return nil
		}
		go p.handle(ctx, s)
	}
}

func (p *Proxy) isAccepting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepting
}

// StopAccepting closes the listener: no client is accepted any more, while
// the sessions already accepted go on until they end or Close ends them.
// Their number is then final (Active only falls). It is safe to call more
// than once, and before or after Close.
func (p *Proxy) StopAccepting() error {
	p.mu.Lock()
	was := p.accepting
	p.accepting = false
	p.mu.Unlock()
	if !was {
		return nil
	}
	if err := p.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("proxy on %s: close listener: %w", p.ln.Addr(), err)
	}
	return nil
}

// track registers a session unless the proxy is closing or no longer
// accepting.
func (p *Proxy) track(s *session) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if isClosed(p.closing) || !p.accepting {
		return false
	}
	p.sessions[s] = struct{}{}
	p.wg.Add(1)
	return true
}

func (p *Proxy) untrack(s *session) {
	p.mu.Lock()
	delete(p.sessions, s)
	p.mu.Unlock()
	p.wg.Done()
}

// Close stops accepting, closes every active connection and waits for the
// sessions to finish. It is safe to call more than once.
func (p *Proxy) Close() error {
	var err error
	p.closeOnce.Do(func() {
		p.mu.Lock()
		close(p.closing)
		p.accepting = false
		p.stop()
		active := make([]*session, 0, len(p.sessions))
		for s := range p.sessions {
			active = append(active, s)
		}
		p.mu.Unlock()

		if cerr := p.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("proxy on %s: close listener: %w", p.ln.Addr(), cerr)
		}
		for _, s := range active {
			s.close()
		}
		p.log.Info("proxy closed", slog.Int("active", len(active)))
	})
	p.wg.Wait()
	return err
}

// session is one client connection and its upstream.
type session struct {
	client net.Conn
	opened time.Time

	mu       sync.Mutex
	upstream net.Conn
	closed   bool
}

// setUpstream records the upstream unless the session was closed meanwhile.
func (s *session) setUpstream(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.upstream = c
	return true
}

// close closes both sides, once.
func (s *session) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	up := s.upstream
	s.mu.Unlock()
	_ = s.client.Close()
	if up != nil {
		_ = up.Close()
	}
}

// handle dials the upstream for one client (or has the handshake start
// the session) and copies until both directions are done.
func (p *Proxy) handle(ctx context.Context, s *session) {
	defer p.untrack(s)
	defer s.close()
	log := p.log.With(slog.String("client", s.client.RemoteAddr().String()))

	sp, ok := p.start(ctx, s, log)
	if !ok {
		return
	}
	if !s.setUpstream(sp.Upstream) {
		_ = sp.Upstream.Close()
		if sp.Closed != nil {
			sp.Closed(0, 0)
		}
		return
	}
	log.Debug("proxy session open")

	toUp, toClient := p.pipe(sp)
	if sp.Closed != nil {
		sp.Closed(toUp, toClient)
	}
	log.Debug("proxy session closed", slog.Int64("bytes_up", toUp), slog.Int64("bytes_down", toClient),
		slog.Duration("duration", time.Since(s.opened)))
}

// start dials the upstream, or runs the handshake, for one session.
func (p *Proxy) start(ctx context.Context, s *session, log *slog.Logger) (*Splice, bool) {
	// Close cancels a dial or handshake in progress.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(p.stopped, cancel)
	defer stop()
	dial := func(ctx context.Context) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, p.dialTimeout)
		defer cancel()
		up, err := p.dial(ctx)
		if err != nil {
			return nil, err
		}
		// A direct TCP upstream gets direct reads and writes too; a tunnel
		// channel is left as it is.
		return sockio.Wrap(up), nil
	}
	if p.handshake == nil {
		up, err := dial(ctx)
		if err != nil {
			log.Warn("proxy upstream dial failed", slog.Any("error", err))
			return nil, false
		}
		return &Splice{Client: s.client, Upstream: up}, true
	}
	sp, err := p.handshake(ctx, s.client, dial)
	if err != nil {
		// A session the server refused (a wrong password) is the client's
		// to tell, and it was told: no warning of the endpoint's.
		level := slog.LevelWarn
		var told interface{ ClientTold() bool }
		if errors.As(err, &told) && told.ClientTold() {
			level = slog.LevelInfo
		}
		log.Log(ctx, level, "proxy session start failed", slog.Any("error", err))
		return nil, false
	}
	if sp == nil {
		return nil, false
	}
	return sp, true
}

// pipe copies client→up and up→client. A direction that ends with EOF
// half-closes its destination when the destination supports CloseWrite and
// lets the other direction finish; a direction that fails, or whose
// destination cannot half-close, closes both sides at once.
func (p *Proxy) pipe(sp *Splice) (toUp, toClient int64) {
	client, up := sp.Client, sp.Upstream
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = client.Close()
			_ = up.Close()
		})
	}
	defer closeBoth()

	done := make(chan struct{})
	go func() {
		defer close(done)
		toClient = p.copyHalf(client, up, closeBoth, sp, false)
	}()
	toUp = p.copyHalf(up, client, closeBoth, sp, true)
	<-done
	return toUp, toClient
}

// copyHalf copies src to dst, tells sp.Ended (when set) how the copy
// ended, and then half-closes dst or closes both.
//
// An upstream other than a TCP connection that copies by itself
// (io.WriterTo as the source, io.ReaderFrom as the destination) does so: a
// tunnel channel then moves the data between the SSH channel and the
// client on one goroutine, without a hand-off between goroutines per
// chunk. Otherwise a pooled buffer is used. The copy ends when either side
// is closed (pipe closes both on the first failure), so no deadline is
// needed.
func (p *Proxy) copyHalf(dst, src net.Conn, closeBoth func(), sp *Splice, fromClient bool) int64 {
	var n int64
	var err error
	if wt, ok := src.(io.WriterTo); ok && !isTCP(src) {
		n, err = wt.WriteTo(writerOnly{dst})
	} else if rf, ok := dst.(io.ReaderFrom); ok && !isTCP(dst) {
		n, err = rf.ReadFrom(readerOnly{src})
	} else {
		bp := p.bufs.Get().(*[]byte)
		// Hide ReaderFrom/WriterTo so that the pooled buffer is used.
		n, err = io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *bp)
		p.bufs.Put(bp)
	}
	if sp.Ended != nil {
		sp.Ended(fromClient, err)
	}
	if err != nil || sp.CloseBoth {
		closeBoth()
		return n
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return n
		}
	}
	closeBoth()
	return n
}

// isTCP reports whether c is a plain TCP connection, whose WriteTo and
// ReadFrom would allocate a buffer per call (or splice, for which the
// proxy's sessions are not set up).
func isTCP(c net.Conn) bool {
	_, ok := c.(*net.TCPConn)
	return ok
}

type readerOnly struct{ io.Reader }

type writerOnly struct{ io.Writer }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
