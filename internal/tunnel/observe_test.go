package tunnel_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/pgrelay/pgrelay/internal/tunnel"
)

func TestDropCause(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{fmt.Errorf("x: %w", tunnel.ErrClosed), ""},
		{&tunnel.DroppedError{Err: tunnel.ErrKeepaliveTimeout}, tunnel.CauseKeepaliveTimeout},
		{&tunnel.DroppedError{Err: io.EOF}, tunnel.CauseEOF},
		{&tunnel.DroppedError{Err: &net.OpError{Op: "read", Err: syscall.ECONNRESET}}, tunnel.CauseReset},
		{&tunnel.DroppedError{Err: fmt.Errorf("ssh: handshake failed: %w", &tunnel.HostKeyMismatchError{Presented: "SHA256:x"})}, tunnel.CauseHostKey},
		{&tunnel.DroppedError{Err: errors.New("something")}, tunnel.CauseOther},
	}
	for _, c := range cases {
		if got := tunnel.DropCause(c.err); got != c.want {
			t.Errorf("DropCause(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
