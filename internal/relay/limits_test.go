package relay_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/relay"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// sharedUpstream is a direct, plain upstream on the test binary's shared
// cluster, with a database of the test's own; dials counts the streams
// the relay opens to the server.
func sharedUpstream(t *testing.T) (*testenv.Postgres, *testenv.Database, relay.Upstream, *atomic.Int64) {
	t.Helper()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	spec := connection.Spec{Name: "test", Host: pg.Host, Port: pg.Port, SSLMode: connection.SSLDisable}
	pol, err := relay.PolicyFor(&spec)
	if err != nil {
		t.Fatal(err)
	}
	dials := new(atomic.Int64)
	dial := func(ctx context.Context) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", pg.Addr())
	}
	return pg, db, relay.Upstream{Dial: dial, TLS: pol, Addr: pg.Addr(), RequireAuth: spec.EffectiveRequireAuth()}, dials
}

// TestRelayBoundsAuthenticationMessages: a client that announces a huge
// authentication message (as anyone who reaches the endpoint can, before
// logging in) is refused as PostgreSQL refuses it, without the relay
// reserving memory for the announced length.
func TestRelayBoundsAuthenticationMessages(t *testing.T) {
	_, db, up, _ := sharedUpstream(t)
	e := startEndpoint(t, up, endpointOptions{noLocalTLS: true})

	c, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters: map[string]string{"user": db.User, "database": db.Name}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatalf("read the authentication request: %v", err)
	}
	if _, ok := msg.(*pgproto3.AuthenticationSASL); !ok {
		t.Fatalf("first message %T, want AuthenticationSASL", msg)
	}

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	// A SASLInitialResponse announcing 1 GiB, and the first bytes of it.
	const announced = 1 << 30
	hdr := []byte{'p', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], announced+4)
	if _, err := c.Write(append(hdr, "SCRAM-SHA-256\x00"...)); err != nil {
		t.Fatal(err)
	}
	// The relay ends the session; until it does, nothing it allocated may
	// approach the announced size.
	closed := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		closed <- err
	}()
	deadline := time.After(goneWithin)
	for {
		var now runtime.MemStats
		runtime.ReadMemStats(&now)
		if grew := now.TotalAlloc - before.TotalAlloc; grew > announced/4 {
			t.Fatalf("the relay allocated %d MiB for an authentication message announced at %d MiB before any of it arrived",
				grew>>20, announced>>20)
		}
		select {
		case <-closed:
			return
		case <-deadline:
			t.Fatalf("the relay still waits for the %d MiB authentication message after %v", announced>>20, goneWithin)
		case <-time.After(10 * time.Millisecond): // polling the heap's statistics
		}
	}
}

// TestRelayForwardsOnlyItsOwnCancelRequests: a CancelRequest through the
// endpoint reaches the server only for a backend the endpoint opened; one
// for another session of the server (a PID and key learnt elsewhere) is
// dropped and that session's statement goes on, while the endpoint's own
// clients still cancel their statements.
func TestRelayForwardsOnlyItsOwnCancelRequests(t *testing.T) {
	pg, db, up, dials := sharedUpstream(t)
	e := startEndpoint(t, up, endpointOptions{noLocalTLS: true})
	super := superConn(t, pg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Another session of the server, not through the endpoint.
	other, err := pgconn.Connect(ctx, db.ConnString()+"&application_name=other_"+db.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	otherErr := make(chan error, 1)
	go func() { otherErr <- other.Exec(ctx, "select pg_sleep(60)").Close() }()
	otherPID := activePID(t, super, "other_"+db.Name, nil)

	// Its cancel request, sent to the endpoint.
	sendCancelTo := func(pid uint32, key []byte) {
		t.Helper()
		c, err := net.Dial("tcp", e.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg, err := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: key}).Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		// The endpoint closes the stream once it has dealt with it.
		_ = c.SetReadDeadline(time.Now().Add(goneWithin))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("the endpoint did not close the cancel request's stream: %v", err)
		}
	}
	dialsBefore := dials.Load()
	sendCancelTo(other.PID(), other.SecretKey())
	if n := dials.Load() - dialsBefore; n != 0 {
		t.Errorf("the endpoint opened %d streams to the server for a cancel request of a backend it did not open", n)
	}

	// A client of the endpoint cancels its own statement: sent after the
	// foreign request, its effect shows that one was dealt with too.
	mine, err := pgx.Connect(ctx, e.connString(db.User, db.Password, "sslmode=disable application_name=mine_"+db.Name+" dbname="+db.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close(context.Background())
	mineErr := make(chan error, 1)
	go func() { _, err := mine.Exec(ctx, "select pg_sleep(60)"); mineErr <- err }()
	activePID(t, super, "mine_"+db.Name, nil)
	sendCancelTo(mine.PgConn().PID(), mine.PgConn().SecretKey())
	var pe *pgconn.PgError
	if err := <-mineErr; !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("the endpoint's own client's statement after its cancel request: %v, want SQLSTATE 57014", err)
	}
	if got := backendState(t, super, otherPID); got != "active" {
		t.Errorf("the other session (pid %d) is %q after a cancel request for it went to the endpoint, want still active", otherPID, got)
	}
	select {
	case err := <-otherErr:
		t.Errorf("the other session's statement ended: %v", err)
	default:
		if err := other.CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		<-otherErr
	}
}
