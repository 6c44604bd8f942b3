package tunnel

import (
	"errors"
	"io"
	"net"
	"syscall"
	"time"
)

// Observer receives a tunnel's measurements (for metrics). Its methods are
// called from the tunnel's goroutines, some on every read and write of the
// SSH connection: they must be fast and safe for concurrent use.
type Observer interface {
	// Handshake reports how long the SSH handshake took, from the TCP
	// connection to the end of authentication.
	Handshake(d time.Duration)
	// KeepaliveReply reports a keepalive's round trip.
	KeepaliveReply(rtt time.Duration)
	// KeepaliveMissed reports a keepalive interval that passed while a
	// keepalive waited for its reply.
	KeepaliveMissed()
	// ChannelOpened and ChannelClosed report a connection through the
	// tunnel (DialContext) opening and closing.
	ChannelOpened()
	ChannelClosed()
	// BytesRead and BytesWritten report bytes read from and written to
	// the bastion (the SSH connection, encrypted, all channels together).
	BytesRead(n int)
	BytesWritten(n int)
}

// Drop causes returned by DropCause.
const (
	CauseKeepaliveTimeout = "keepalive_timeout"
	CauseEOF              = "eof"
	CauseReset            = "reset"
	CauseHostKey          = "host_key"
	CauseOther            = "other"
)

// DropCause classifies why a tunnel ended, for metrics: keepalive_timeout
// (the bastion stopped answering), eof (it closed the connection), reset
// (the connection was reset or broke), host_key (a key re-exchange
// presented another host key), other; "" for a tunnel that was closed
// (Close) or is up.
func DropCause(err error) string {
	var hk *HostKeyMismatchError
	switch {
	case err == nil, errors.Is(err, ErrClosed):
		return ""
	case errors.Is(err, ErrKeepaliveTimeout):
		return CauseKeepaliveTimeout
	case errors.As(err, &hk):
		return CauseHostKey
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return CauseReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return CauseEOF
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		return CauseReset
	}
	return CauseOther
}

// nopObserver discards measurements.
type nopObserver struct{}

func (nopObserver) Handshake(time.Duration)      {}
func (nopObserver) KeepaliveReply(time.Duration) {}
func (nopObserver) KeepaliveMissed()             {}
func (nopObserver) ChannelOpened()               {}
func (nopObserver) ChannelClosed()               {}
func (nopObserver) BytesRead(int)                {}
func (nopObserver) BytesWritten(int)             {}

// Missed keepalives are counted by a timer armed when a keepalive is sent,
// stopped by the reply, and re-armed each time it fires.

// keepaliveSent arms the watch for a keepalive just sent.
func (t *Tunnel) keepaliveSent() {
	t.kaMu.Lock()
	defer t.kaMu.Unlock()
	t.kaPending = true
	if t.kaTimer == nil {
		t.kaTimer = time.AfterFunc(t.cfg.KeepaliveInterval, t.keepaliveOverdue)
		return
	}
	t.kaTimer.Reset(t.cfg.KeepaliveInterval)
}

// keepaliveAnswered disarms the watch.
func (t *Tunnel) keepaliveAnswered() {
	t.kaMu.Lock()
	defer t.kaMu.Unlock()
	t.kaPending = false
	if t.kaTimer != nil {
		t.kaTimer.Stop()
	}
}

// keepaliveOverdue runs an interval after a keepalive was sent (or after
// the last time it ran) while no reply came.
func (t *Tunnel) keepaliveOverdue() {
	t.kaMu.Lock()
	defer t.kaMu.Unlock()
	if !t.kaPending {
		return
	}
	select {
	case <-t.done:
		return
	default:
	}
	t.missed.Add(1)
	t.cfg.Observer.KeepaliveMissed()
	t.kaTimer.Reset(t.cfg.KeepaliveInterval)
}
