package relay_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/relay"
)

// startStalledServer is a server that reads a session's startup message
// and then answers nothing (stalled: a bastion or server too loaded to go
// on), or first asks for an MD5 password and stalls once it has it
// (afterAuth).
func startStalledServer(t *testing.T, afterAuth bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		_ = ln.Close()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				be := pgproto3.NewBackend(c, c)
				if _, err := be.ReceiveStartupMessage(); err != nil {
					return
				}
				if afterAuth {
					be.Send(&pgproto3.AuthenticationMD5Password{Salt: [4]byte{1, 2, 3, 4}})
					if err := be.Flush(); err != nil {
						return
					}
					if err := be.SetAuthType(pgproto3.AuthTypeMD5Password); err != nil {
						return
					}
					if _, err := be.Receive(); err != nil {
						return
					}
				}
				<-stop
			}()
		}
	}()
	return ln.Addr().String()
}

// TestRelayStartupTimeoutTold: a session whose startup runs out of time
// because the server (or the tunnel) does not answer, as with many
// clients starting at once on a loaded bastion, ends with an error the
// client is given and can read, not a closed connection ("SSL SYSCALL
// error: EOF detected", "server closed the connection unexpectedly").
func TestRelayStartupTimeoutTold(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		afterAuth bool
		sslmode   string
	}{
		{"no answer", false, "disable"},
		{"no answer, TLS to the endpoint", false, "require"},
		{"no answer after the password", true, "disable"},
		{"no answer after the password, TLS to the endpoint", true, "require"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addr := startStalledServer(t, tc.afterAuth)
			spec := connection.Spec{Name: "c", Host: "127.0.0.1", SSLMode: connection.SSLDisable}
			pol, err := relay.PolicyFor(&spec)
			if err != nil {
				t.Fatal(err)
			}
			up := relay.Upstream{TLS: pol, Addr: addr, RequireAuth: spec.EffectiveRequireAuth(),
				Dial: func(ctx context.Context) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "tcp", addr)
				}}
			e := startEndpoint(t, up, endpointOptions{startupTimeout: 500 * time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := pgconn.Connect(ctx, e.connString("u", "pw", "sslmode="+tc.sslmode))
			if c != nil {
				_ = c.Close(ctx)
				t.Fatal("connected to a server that never finished the startup")
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				t.Fatalf("client error %v, want the relay's error response", err)
			}
			if pe.Code != "08006" || !strings.Contains(pe.Message, "did not start within 500ms") {
				t.Fatalf("client error %q (SQLSTATE %s), want a startup time-out", pe.Message, pe.Code)
			}
		})
	}
}
