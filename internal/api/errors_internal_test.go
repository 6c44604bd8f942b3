package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/pg"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// closedPortConnectError returns pgx's error for a PostgreSQL server that
// cannot be reached: a loopback port that nothing listens on.
func closedPortConnectError(t *testing.T, user, database string) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	_ = ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	connString := fmt.Sprintf("postgres://%s:sekrit@127.0.0.1:%d/%s?sslmode=disable", user, addr.Port, database)
	conn, err := pgconn.Connect(ctx, connString)
	if err == nil {
		_ = conn.Close(ctx)
		t.Fatalf("connect to closed port %d: no error", addr.Port)
	}
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("connect to closed port: %T %v, want a *pgconn.ConnectError", err, err)
	}
	return err
}

// TestClassifyStoreErrors: an API request that fails because pgrelay's own
// PostgreSQL store is down (or refuses a statement, such as a write after
// a failover to a read-only standby) is 503 unavailable, saying that the
// store failed, without the store's host, database and user; only a
// connection's database failing is 502 database_error. Before, a store
// outage answered every request, unauthenticated ones included (the token
// lookup failed), with 502 database_error quoting "failed to connect to
// `user=pgrelay database=pgrelay`" and the store's address.
func TestClassifyStoreErrors(t *testing.T) {
	t.Parallel()
	storeDown := fmt.Errorf("get token: %w", closedPortConnectError(t, "storeuser", "storedb"))
	readOnly := fmt.Errorf("save run: %w", &pgconn.PgError{Severity: "ERROR", Code: "25006",
		Message: "cannot execute UPDATE in a read-only transaction"})
	targetDown := fmt.Errorf("connection wh: connect to database \"app\" as \"app\" on 127.0.0.1: %w",
		pg.TidyConnectError(closedPortConnectError(t, "app", "app")))
	targetSQL := &app.QueryError{Connection: "wh", Err: &pgconn.PgError{Severity: "ERROR", Code: "42P01",
		Message: `relation "nosuchtable" does not exist`}}

	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"store unreachable", storeDown, http.StatusServiceUnavailable, CodeUnavailable},
		{"store refuses a write", readOnly, http.StatusServiceUnavailable, CodeUnavailable},
		{"connection's database unreachable", targetDown, http.StatusBadGateway, CodeDatabaseError},
		{"connection's database refuses SQL", targetSQL, http.StatusBadGateway, CodeDatabaseError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := classify(tc.err)
			if status != tc.status || body.Code != tc.code {
				t.Fatalf("classify(%v) = %d %s, want %d %s", tc.err, status, body.Code, tc.status, tc.code)
			}
			if tc.code != CodeUnavailable {
				return
			}
			for _, leak := range []string{"storeuser", "storedb", "127.0.0.1", "read-only transaction"} {
				if strings.Contains(body.Message, leak) {
					t.Errorf("message %q quotes %q: the store's detail is for the server log", body.Message, leak)
				}
			}
			if !strings.Contains(body.Message, "store") {
				t.Errorf("message %q does not say that the store failed", body.Message)
			}
		})
	}
}

// TestWriteErrorStoreUnavailable: the answer to a request that the store's
// outage failed names the request, whose server log line has the detail,
// and the log line has the error.
func TestWriteErrorStoreUnavailable(t *testing.T) {
	t.Parallel()
	var logs testenv.LogBuffer
	a := &API{log: slog.New(requestid.NewHandler(slog.NewJSONHandler(&logs, nil)))}
	req := httptest.NewRequest(http.MethodGet, "/api/v1/connections", nil)
	req = req.WithContext(requestid.With(req.Context(), "req-store-down"))
	rec := httptest.NewRecorder()
	a.writeError(rec, req, fmt.Errorf("get token: %w", closedPortConnectError(t, "storeuser", "storedb")))
	var resp ErrorResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("response %q: %v", rec.Body.String(), err)
	}
	if rec.Code != http.StatusServiceUnavailable || resp.Error.Code != CodeUnavailable ||
		!strings.Contains(resp.Error.Message, "for request req-store-down") || strings.Contains(resp.Error.Message, "storeuser") {
		t.Errorf("response %d %+v", rec.Code, resp.Error)
	}
	if l := logs.String(); !strings.Contains(l, "storeuser") || !strings.Contains(l, "req-store-down") {
		t.Errorf("the server log lacks the store's error or the request ID:\n%s", l)
	}
}
