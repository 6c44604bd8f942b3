package diagnose

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/pg"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// SSLRefusedError means the server answered 'N' to the SSLRequest: it does
// not accept SSL connections (ssl = off).
type SSLRefusedError struct {
	// Addr is the database's host:port.
	Addr string
}

// Error says that the server refused SSL.
func (e *SSLRefusedError) Error() string {
	return fmt.Sprintf("the server at %s does not accept SSL (it answered 'N' to the SSL request)", e.Addr)
}

// NotPostgresError means the server answered the SSLRequest, or the
// startup message, with something no PostgreSQL server sends.
type NotPostgresError struct {
	// Addr is the database's host:port.
	Addr string
	// Answer is the first byte the server sent.
	Answer byte
	// Startup is set when the answer was to the startup message (the
	// login), not to the SSLRequest.
	Startup bool
}

// Error names the unexpected answer.
func (e *NotPostgresError) Error() string {
	what := "the SSL request"
	if e.Startup {
		what = "the startup message"
	}
	return fmt.Sprintf("the server at %s answered %s with %q, which no PostgreSQL server sends", e.Addr, what, e.Answer)
}

// sslRequest is PostgreSQL's SSLRequest message: length 8, code 80877103.
var sslRequest = [8]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

func (r *runner) dbAddr() string { return net.JoinHostPort(r.spec.Host, strconv.Itoa(r.spec.Port)) }

// streamStep is the step that opens the byte stream to the database.
func (r *runner) streamStep() StepID {
	if r.tunnel != nil {
		return StepForward
	}
	return StepTCP
}

// openStream opens a byte stream to the database: a channel through the
// bastion, or a TCP connection to the resolved addresses.
func (r *runner) openStream(ctx context.Context) (net.Conn, error) {
	if r.tunnel != nil {
		return r.forward(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, r.in.StepTimeout)
	defer cancel()
	c, err := dialIPs(ctx, r.in.Network, r.dbIPs, r.spec.Port)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, &StepTimeoutError{Step: StepTCP, After: r.in.StepTimeout, Err: err}
		}
		return nil, fmt.Errorf("connect to %s: %w", r.dbAddr(), err)
	}
	return c, nil
}

// tlsConfig is the TLS configuration of the spec's sslmode; for modes
// without one (disable), that of require: encryption without verification.
func (r *runner) tlsConfig() (*tls.Config, error) {
	s := r.spec.Clone()
	if s.SSLMode == connection.SSLDisable {
		s.SSLMode = connection.SSLRequire
	}
	return s.TLSConfig()
}

// startTLS sends the SSLRequest and, when the server agrees, completes
// the TLS handshake: the same exchange pgconn performs, done here so that
// its failures are the tls step's.
func (r *runner) startTLS(ctx context.Context, conn net.Conn) (*tls.Conn, error) {
	cfg, err := r.tlsConfig()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.in.StepTimeout)
	defer cancel()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		_ = conn.SetDeadline(time.Time{})
	}()
	timeout := func(err error) error {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return &StepTimeoutError{Step: StepTLS, After: r.in.StepTimeout, Err: err}
		}
		if r.tunnel != nil && r.tunnel.Err() != nil {
			return r.tunnel.Err()
		}
		return err
	}
	if _, err := conn.Write(sslRequest[:]); err != nil {
		return nil, timeout(fmt.Errorf("send SSL request to %s: %w", r.dbAddr(), err))
	}
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return nil, timeout(fmt.Errorf("read the answer to the SSL request from %s: %w", r.dbAddr(), err))
	}
	switch answer[0] {
	case 'S':
	case 'N':
		return nil, &SSLRefusedError{Addr: r.dbAddr()}
	default:
		return nil, &NotPostgresError{Addr: r.dbAddr(), Answer: answer[0]}
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, timeout(fmt.Errorf("TLS handshake with %s: %w", r.dbAddr(), err))
	}
	return tc, nil
}

// tlsDetail describes an established TLS session.
func tlsDetail(tc *tls.Conn, mode connection.SSLMode, host string) string {
	cs := tc.ConnectionState()
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %s", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
	if len(cs.PeerCertificates) > 0 {
		c := cs.PeerCertificates[0]
		fmt.Fprintf(&b, "; server certificate %q issued by %q, valid until %s", c.Subject.CommonName,
			c.Issuer.CommonName, c.NotAfter.UTC().Format("2006-01-02"))
	}
	switch mode {
	case connection.SSLVerifyFull:
		fmt.Fprintf(&b, "; verified: signed by the configured CA and valid for %q (verify-full)", host)
	case connection.SSLVerifyCA:
		b.WriteString("; verified: signed by the configured CA; host name not checked (verify-ca)")
	default:
		fmt.Fprintf(&b, "; encrypted, certificate not verified (sslmode=%s)", mode)
	}
	return b.String()
}

// loginResult is the outcome of one PostgreSQL login.
type loginResult struct {
	conn       *pgx.Conn
	err        error
	authAt     time.Time // AuthenticationOk received; zero if not
	authMethod int32     // first authentication request code; 0 for trust
	end        time.Time
}

// afterAuth reports whether the server had accepted the credentials when
// the login failed.
func (l *loginResult) afterAuth() bool { return !l.authAt.IsZero() }

// login runs the PostgreSQL startup over nc (already encrypted, or not) for
// database, with the spec's user and password. It owns nc.
func (r *runner) login(ctx context.Context, nc net.Conn, database string) loginResult {
	cfg, err := pg.Config(r.spec, nil)
	if err != nil {
		_ = nc.Close()
		return loginResult{err: err, end: time.Now()}
	}
	cfg.Database = database
	// TLS is done (or declined) already, and this is one attempt: no
	// fallbacks; the watchdog bounds it instead of connect_timeout.
	cfg.TLSConfig, cfg.Fallbacks, cfg.ConnectTimeout = nil, nil, 0
	cfg.LookupFunc = func(_ context.Context, host string) ([]string, error) { return []string{host}, nil }
	handed := false
	cfg.DialFunc = func(context.Context, string, string) (net.Conn, error) {
		if handed {
			return nil, errors.New("diagnose: the stream was already used")
		}
		handed = true
		return nc, nil
	}
	wd := newWatchdog(ctx, r.in.StepTimeout)
	defer wd.stop()
	obs := &startupObserver{onAuthOK: wd.reset}
	cfg.BuildFrontend = func(rd io.Reader, w io.Writer) *pgproto3.Frontend {
		obs.r = rd
		return pgproto3.NewFrontend(obs, w)
	}
	conn, err := pgx.ConnectConfig(wd.ctx, cfg)
	res := loginResult{conn: conn, end: time.Now()}
	res.authAt, res.authMethod = obs.result()
	if !handed {
		_ = nc.Close()
	}
	if err != nil {
		step := StepPostgresAuth
		if res.afterAuth() {
			step = StepDatabase
		}
		method := authMethodName(res.authMethod)
		alien, first := obs.notPostgres()
		switch {
		case alien:
			err = &NotPostgresError{Addr: r.dbAddr(), Answer: first, Startup: true}
		case asPgError(err) != nil:
		case !res.afterAuth() && method != "" && !r.spec.AcceptsAuth(method):
			err = &AuthRefusedError{Method: method, Policy: r.spec.EffectiveRequireAuth(), Err: err}
		case r.tunnel != nil && r.tunnel.Err() != nil:
			err = r.tunnel.Err()
		case wd.timedOut():
			err = &StepTimeoutError{Step: step, After: r.in.StepTimeout, Err: err}
		}
		res.err = err
	}
	return res
}

// attempt opens a new stream, negotiates TLS when encrypt is set, and
// logs in to database: a whole connection attempt, for fallbacks and
// probes.
func (r *runner) attempt(ctx context.Context, encrypt bool, database string) loginResult {
	nc, err := r.openStream(ctx)
	if err != nil {
		return loginResult{err: err, end: time.Now()}
	}
	if encrypt {
		tc, err := r.startTLS(ctx, nc)
		if err != nil {
			_ = nc.Close()
			return loginResult{err: err, end: time.Now()}
		}
		nc = tc
	}
	return r.login(ctx, nc, database)
}

// retriable reports whether pgx would try its fallback configuration
// after err (sslmode allow and prefer): any refusal by the server except a
// wrong password, a missing database or a missing CONNECT privilege.
func retriable(err error) bool {
	pgErr := asPgError(err)
	if pgErr == nil {
		return false
	}
	switch pgErr.Code {
	case "28P01", "3D000", "42501":
		return false
	}
	return true
}

// postgres runs tcp (or forward), tls, postgres_auth and database.
func (r *runner) postgres(ctx context.Context) (*pgx.Conn, bool) {
	stepID := r.streamStep()
	start := time.Now()
	raw, err := r.openStream(ctx)
	if err != nil {
		r.fail(stepID, start, err, r.hintStream(err))
		return nil, false
	}
	local := raw.LocalAddr()
	if r.tunnel != nil {
		r.ok(stepID, start, fmt.Sprintf("the bastion opened a connection to %s", r.dbAddr()), "")
	} else {
		r.ok(stepID, start, fmt.Sprintf("connected to %s from %s", raw.RemoteAddr(), local), "")
	}

	mode := r.spec.SSLMode
	conn := raw
	encrypted := false
	switch mode {
	case connection.SSLDisable:
		r.notRequested(StepTLS, "not requested (sslmode=disable): the connection is not encrypted")
	case connection.SSLAllow:
		r.notRequested(StepTLS, "not requested first (sslmode=allow): tried without TLS, with TLS only if the server refuses that")
	default:
		start = time.Now()
		tc, err := r.startTLS(ctx, raw)
		var refused *SSLRefusedError
		switch {
		case err == nil:
			conn, encrypted = tc, true
			r.ok(StepTLS, start, tlsDetail(tc, mode, r.spec.Host), "")
		case mode == connection.SSLPrefer && errors.As(err, &refused):
			// Like libpq: continue on the same connection, unencrypted.
			r.ok(StepTLS, start, "the server does not accept SSL: continuing unencrypted (sslmode=prefer)",
				"Traffic to this server is not encrypted. If it should be, enable ssl on the server; sslmode=require refuses unencrypted connections.")
		case mode == connection.SSLPrefer && !isTimeout(err) && !r.tunnelDown():
			// Like libpq and pgx: a failed TLS handshake is retried
			// without TLS on a new connection.
			_ = raw.Close()
			raw2, err2 := r.openStream(ctx)
			if err2 != nil {
				r.fail(StepTLS, start, fmt.Errorf("%w; reconnecting without TLS (sslmode=prefer) failed too: %w", err, err2), r.hintStream(err2))
				return nil, false
			}
			conn = raw2
			r.ok(StepTLS, start, fmt.Sprintf("TLS failed (%v); sslmode=prefer continued unencrypted on a new connection", err),
				"The server offers SSL but the TLS handshake failed: "+r.hintTLS(err))
		default:
			_ = raw.Close()
			r.fail(StepTLS, start, err, r.hintTLS(err))
			return nil, false
		}
	}

	start = time.Now()
	res := r.login(ctx, conn, r.spec.Database)
	note := ""
	if res.err != nil && retriable(res.err) {
		// Like pgx's fallback configuration: one more attempt with the
		// other encryption. Its result counts when the server answered it;
		// if it failed before that, the first refusal explains more.
		first := errorText(res.err)
		retry := func(encrypt bool, why string) {
			res2 := r.attempt(ctx, encrypt, r.spec.Database)
			if res2.err == nil || asPgError(res2.err) != nil {
				res, encrypted, note = res2, encrypt, fmt.Sprintf(why, first)
			}
		}
		switch {
		case mode == connection.SSLAllow:
			retry(true, "; the unencrypted attempt was refused (%s), so sslmode=allow retried with TLS")
		case mode == connection.SSLPrefer && encrypted:
			retry(false, "; the encrypted attempt was refused (%s), so sslmode=prefer retried without TLS: this session is NOT encrypted")
		}
	}
	if res.err != nil {
		hint := r.hintLogin(ctx, &res, encrypted, local)
		if res.afterAuth() {
			r.okAt(StepPostgresAuth, start, res.authAt, r.authDetail(res.authMethod)+note, "")
			r.failAt(StepDatabase, res.authAt, res.end, res.err, hint)
		} else {
			r.failAt(StepPostgresAuth, start, res.end, res.err, hint)
		}
		return nil, false
	}
	r.okAt(StepPostgresAuth, start, res.authAt, r.authDetail(res.authMethod)+note, "")
	r.okAt(StepDatabase, res.authAt, res.end, fmt.Sprintf("session open in database %q (server process %d)",
		r.spec.Database, res.conn.PgConn().PID()), "")
	return res.conn, true
}

// authDetail describes how the server authenticated the user.
func (r *runner) authDetail(method int32) string {
	how := "no password asked (the server trusts this connection)"
	switch method {
	case authSASL:
		how = "password accepted (SCRAM-SHA-256)"
	case authMD5:
		how = "password accepted (MD5; SCRAM-SHA-256 is safer: password_encryption = scram-sha-256)"
	case authCleartext:
		how = "password accepted (sent in clear text to the server)"
	case 0:
	default:
		how = fmt.Sprintf("accepted (authentication method %d)", method)
	}
	return fmt.Sprintf("user %q: %s", r.spec.User, how)
}

// tunnelDown reports whether the tunnel (if any) has dropped.
func (r *runner) tunnelDown() bool { return r.tunnel != nil && r.tunnel.Err() != nil }

// isTimeout reports whether err is a time-out.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// asPgError returns the server's error inside err, or nil.
func asPgError(err error) *pgconn.PgError {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr
	}
	return nil
}

// pgErrorText renders a server error with its SQLSTATE.
func pgErrorText(e *pgconn.PgError) string {
	s := fmt.Sprintf("%s: %s (SQLSTATE %s)", e.Severity, e.Message, e.Code)
	if e.Detail != "" {
		s += "; " + e.Detail
	}
	return s
}

// listDatabases connects to the "postgres" database the same way and
// lists the databases the user may connect to, for the hint of a missing
// database.
func (r *runner) listDatabases(ctx context.Context, encrypted bool) ([]string, error) {
	res := r.attempt(ctx, encrypted, "postgres")
	if res.err != nil {
		return nil, res.err
	}
	defer res.conn.Close(context.WithoutCancel(ctx))
	qctx, cancel := context.WithTimeout(ctx, r.in.StepTimeout)
	defer cancel()
	rows, err := res.conn.Query(qctx, `SELECT datname FROM pg_database
		WHERE datallowconn AND NOT datistemplate AND has_database_privilege(datname, 'CONNECT') ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// probeSSLRequired tells whether a login over TLS gets past the
// pg_hba.conf check that refused the unencrypted one.
func (r *runner) probeSSLRequired(ctx context.Context) bool {
	res := r.attempt(ctx, true, r.spec.Database)
	if res.conn != nil {
		_ = res.conn.Close(context.WithoutCancel(ctx))
		return true
	}
	if res.afterAuth() {
		return true
	}
	pgErr := asPgError(res.err)
	return pgErr != nil && pgErr.Code != "28000"
}

// dropped returns the tunnel's drop error inside err, if any.
func dropped(err error) *tunnel.DroppedError {
	var d *tunnel.DroppedError
	if errors.As(err, &d) {
		return d
	}
	return nil
}
