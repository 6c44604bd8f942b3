package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pgrelay/pgrelay/internal/proxy"
)

// session is one relayed session after its startup phase.
type session struct {
	r      *Relay
	b      Backend
	log    *slog.Logger
	client *clientConn
	up     net.Conn
	dial   DialFunc // the session's dial function, for its cancel request

	mu      sync.Mutex
	decided bool // the first end was classified
	end     End
	// cancelLater: the upstream broke, so the cancel request is sent
	// once the session is closed rather than before.
	cancelLater bool
}

// splice hands the session to the proxy.
func (s *session) splice() *proxy.Splice {
	return &proxy.Splice{Client: s.client, Upstream: s.up, Ended: s.ended, Closed: s.closed, CloseBoth: true}
}

// ended classifies the session's end when the first direction of the
// copy ends, and cancels the backend's statement when the client went
// away without Terminate, before the proxy closes the upstream.
func (s *session) ended(fromClient bool, err error) {
	s.mu.Lock()
	if s.decided {
		s.mu.Unlock()
		return
	}
	s.decided = true
	e := End{Err: err, At: time.Now()}
	readErr, writeErr, terminated := s.client.state()
	if errors.Is(err, net.ErrClosed) {
		// Closed here: by the proxy shutting down (or the relay itself).
		e.How = Closed
	} else if fromClient {
		switch {
		case readErr == nil:
			// Copying to the server failed.
			e.How = UpstreamLost
		case terminated:
			e.How = Terminated
		default:
			e.How = ClientLost
		}
	} else {
		switch {
		case terminated:
			// The server closed after the client's Terminate, before the
			// client's own end of stream was read.
			e.How = Terminated
		case writeErr != nil:
			e.How = ClientLost
		case err == nil:
			e.How = ServerClosed
		default:
			e.How = UpstreamLost
		}
	}
	cancelNow := e.How == ClientLost || e.How == Closed
	s.cancelLater = e.How == UpstreamLost
	e.CancelSent = cancelNow || s.cancelLater
	s.end = e
	s.mu.Unlock()
	if cancelNow {
		s.cancel()
	}
}

// cancel sends a CancelRequest for the session's backend and records the
// outcome.
func (s *session) cancel() {
	err := s.sendCancel()
	s.mu.Lock()
	s.end.CancelErr = err
	s.mu.Unlock()
}

// sendCancel sends a CancelRequest for the session's backend once.
func (s *session) sendCancel() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.r.cfg.CancelTimeout)
	defer cancel()
	up := s.r.cfg.Upstream
	return sendCancel(ctx, &up, s.dial, s.b.PID, s.b.SecretKey)
}

// Backoff of the cancel requests sent again (Config.CancelRetryFor).
const (
	cancelRetryFirst = time.Second
	cancelRetryMax   = 30 * time.Second
)

// retryCancel sends the session's cancel request again, with backoff,
// until it is sent or Config.CancelRetryFor has passed since the first
// try, and logs the outcome. PostgreSQL ignores a request for a backend
// that has ended (its key is the backend's own). Close ends the wait
// for the next try, which is then the last (see Relay.Close).
func (s *session) retryCancel(log *slog.Logger) {
	var undelivered error
	defer func() { s.r.retryEnded(undelivered) }()
	deadline := time.Now().Add(s.r.cfg.CancelRetryFor)
	var err error
	for wait := cancelRetryFirst; time.Now().Add(wait).Before(deadline); wait = min(2*wait, cancelRetryMax) {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.r.stop:
			t.Stop()
		}
		if err = s.sendCancel(); err == nil {
			log.Info("relay: cancel request sent for the statement of a session lost with its connection, once the server could be reached again")
			return
		}
		select {
		case <-s.r.stop:
			// The endpoint is closing: that was the last try.
			log.Warn("relay: closed before the cancel request of a session lost with its connection could be sent; its statement may still be running",
				slog.Any("cancel_error", err))
			undelivered = fmt.Errorf("relay: the cancel request for %v was not sent before the relay closed: %w", s.b, err)
			return
		default:
		}
	}
	log.Warn("relay: gave up sending the cancel request of a session lost with its connection; its statement may still be running",
		slog.Duration("tried_for", s.r.cfg.CancelRetryFor), slog.Any("cancel_error", err))
}

// closed reports the end once both sides are closed.
func (s *session) closed(toUp, toClient int64) {
	s.mu.Lock()
	later := s.cancelLater
	s.mu.Unlock()
	if later {
		s.cancel()
	}
	s.mu.Lock()
	e := s.end
	s.mu.Unlock()
	if e.How == 0 {
		e.How, e.At = Closed, time.Now()
	}
	attrs := []any{slog.String("how", e.How.String()), slog.Int64("bytes_up", toUp), slog.Int64("bytes_down", toClient),
		slog.Duration("duration", time.Since(s.b.OpenedAt))}
	if e.Err != nil {
		attrs = append(attrs, slog.Any("error", e.Err))
	}
	s.r.track(s.b, false)
	retry := later && e.CancelErr != nil && s.r.cfg.CancelRetryFor > 0 && s.r.startRetry()
	switch {
	case retry:
		s.log.Warn("relay: session lost with its connection to the server; could not cancel its statement yet, trying again",
			append(attrs, slog.Any("cancel_error", e.CancelErr), slog.Duration("for", s.r.cfg.CancelRetryFor))...)
		go s.retryCancel(s.log.With(attrs...))
	case e.CancelSent && e.CancelErr != nil:
		s.log.Warn("relay: session ended; could not cancel its statement", append(attrs, slog.Any("cancel_error", e.CancelErr))...)
	case e.CancelSent:
		s.log.Info("relay: session ended without Terminate; cancel request sent for its statement", attrs...)
	default:
		s.log.Debug("relay: session ended", attrs...)
	}
	if o := s.r.cfg.Observer; o != nil {
		o.BackendClosed(s.b, e)
	}
}

// clientConn is the client's side of a spliced session. It keeps the last
// bytes the client sent (to tell a Terminate from a client that went
// away) and the first read and write errors. Everything else passes
// straight through.
type clientConn struct {
	net.Conn
	terminate []byte

	// mu guards the fields below: a proxy's copy may read the client on
	// a goroutine of its own (a tunnel channel's ReadFrom) that is still
	// in a Read when the session ends.
	mu       sync.Mutex
	tail     [8]byte // the last tailLen bytes read, tailLen <= len(terminate)
	tailLen  int
	readErr  error
	writeErr error
}

func (c *clientConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if n > 0 {
		c.keepTail(p[:n])
	}
	if err != nil && c.readErr == nil {
		c.readErr = err
	}
	c.mu.Unlock()
	return n, err
}

// keepTail keeps the last len(terminate) bytes of what was read. Called
// with mu held.
func (c *clientConn) keepTail(p []byte) {
	k := len(c.terminate)
	if len(p) >= k {
		c.tailLen = copy(c.tail[:], p[len(p)-k:])
		return
	}
	keep := min(c.tailLen, k-len(p))
	copy(c.tail[:], c.tail[c.tailLen-keep:c.tailLen])
	copy(c.tail[keep:], p)
	c.tailLen = keep + len(p)
}

// state returns the first read and write errors and whether the last
// bytes read were a Terminate message.
func (c *clientConn) state() (readErr, writeErr error, terminated bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr, c.writeErr, bytes.Equal(c.tail[:c.tailLen], c.terminate)
}

func (c *clientConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		c.mu.Lock()
		if c.writeErr == nil {
			c.writeErr = err
		}
		c.mu.Unlock()
	}
	return n, err
}

// CloseWrite half-closes the client's connection when it can.
func (c *clientConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
