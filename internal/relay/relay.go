// Package relay starts PostgreSQL sessions for a local endpoint
// (internal/proxy) so that pgrelay knows every backend it opened.
//
// For each client connection the relay reads the startup phase message by
// message with pgproto3: it answers the client's SSLRequest with its own
// TLS (a self-signed certificate, see [NewLocalTLS]) or refuses it, opens
// the database hop with the connection's sslmode (so verify-full checks
// the real host name, not the loopback address the client used), forwards
// the StartupMessage and relays the authentication exchange both ways
// until ReadyForQuery, keeping the server's BackendKeyData (PID and
// secret key) and ParameterStatus values. From then on the proxy copies
// raw bytes as it does for any session; the relay only keeps the last
// five bytes the client sent, to know whether it said Terminate before it
// went away.
//
// A client that goes away without Terminate (killed mid-statement) leaves
// its backend running a statement that PostgreSQL would only notice when
// it next writes to the client. The relay then sends a CancelRequest for
// that backend over a new stream and closes the session, so the statement
// stops and an open transaction rolls back. A client's own CancelRequest
// (psql's Ctrl-C) is forwarded as it is when it names the backend (PID
// and secret key) of a session the relay has open; one for any other
// backend goes no further, so a process that reaches the endpoint cannot
// have it send cancel requests for other sessions of the server.
//
// Authentication messages from a client are bounded as PostgreSQL bounds
// them (64 KiB): a client that has not logged in cannot make the relay
// reserve memory for a message it announces.
//
// Channel binding (SCRAM-SHA-256-PLUS) cannot span the relay, since the
// client and the server see two different TLS sessions: the relay drops
// it from the mechanisms the server offers.
//
// In login mode ([Config.Login]) the relay does not pass authentication
// through: it authenticates the client itself against a password of the
// endpoint's own (SCRAM-SHA-256, and SCRAM-SHA-256-PLUS with
// tls-server-end-point over its local TLS), and only then logs in to the
// server with credentials the client never sees (a stored password, a
// token), through [Login.Connect], taking the server's session over with
// pgconn's Hijack.
package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/proxy"
)

// Default time-outs of a relay.
const (
	// DefaultStartupTimeout bounds a session's startup phase: from the
	// client's first byte to ReadyForQuery, dial included.
	DefaultStartupTimeout = 30 * time.Second
	// DefaultCancelTimeout bounds a cancel request sent for a session
	// whose client went away.
	DefaultCancelTimeout = 10 * time.Second
)

// tellTimeout bounds the sending of the error that tells a client its
// session's startup ran out of time, whose deadline has then passed.
const tellTimeout = 2 * time.Second

// scramPlus is the SASL mechanism with channel binding.
const scramPlus = "SCRAM-SHA-256-PLUS"

// Config configures a relay.
type Config struct {
	// Upstream is the database server. Its Dial is used for cancel
	// requests made outside a session (Cancel, Registry); sessions use the
	// dial function the proxy hands to Handshake.
	Upstream Upstream
	// LocalTLS, when set, is the TLS server configuration that answers a
	// client's SSLRequest; without it the relay refuses TLS ('N') and
	// clients go on without (or give up, with sslmode=require).
	LocalTLS *tls.Config
	// Observer, when set, learns about each backend opened and closed.
	Observer Observer
	// StartupTimeout bounds each session's startup phase; default
	// DefaultStartupTimeout.
	StartupTimeout time.Duration
	// CancelTimeout bounds a cancel request sent when a client went away;
	// default DefaultCancelTimeout.
	CancelTimeout time.Duration
	// CancelRetryFor, when set, keeps sending the cancel request of a
	// session whose stream to the server was lost (its tunnel dropped)
	// for this long, with backoff, while it cannot be sent: the server
	// may be reached again (the dial function opens the tunnel anew),
	// and until then the session's statement runs on. Zero tries once.
	// Close stops these retries after a last attempt.
	CancelRetryFor time.Duration
	// Logger receives one line per session; nil discards.
	Logger *slog.Logger
	// Login, when set, makes the relay authenticate clients itself and
	// log in to the server with credentials of its own (see Login);
	// otherwise authentication passes through.
	Login *Login
	// Refused, when set, is called with each session the server refused
	// as it started (the client has been given the server's error): a
	// refusal of the client's own credentials when authentication passes
	// through, of Login.Connect's in login mode.
	Refused func(*RefusedError)
}

// Relay starts sessions for a proxy: pass its Handshake to
// proxy.WithHandshake.
type Relay struct {
	cfg       Config
	log       *slog.Logger
	terminate []byte // the Terminate message, as the client sends it
	auth      *localAuth
	authErr   error // why Login cannot be used

	// live holds the keys (Backend.key) of the backends of the sessions
	// the relay has open: the only ones a client's cancel request is
	// forwarded for.
	mu   sync.Mutex
	live map[string]struct{}
	// closing is set once Close has begun: no cancel request is sent
	// again after that (see retryCancel). retrying counts the sessions
	// whose cancel request is being sent again; retries waits for them.
	closing  bool
	retrying int
	retries  sync.WaitGroup
	// undelivered are the errors of the cancel requests that Close
	// stopped before they could be sent.
	undelivered []error
	// stop is closed when Close begins; closeOnce closes it once.
	stop      chan struct{}
	closeOnce sync.Once
}

// New returns a relay for cfg.
func New(cfg Config) *Relay {
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = DefaultStartupTimeout
	}
	if cfg.CancelTimeout <= 0 {
		cfg.CancelTimeout = DefaultCancelTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	term, _ := (&pgproto3.Terminate{}).Encode(nil) // a fixed 5 bytes; cannot fail
	r := &Relay{cfg: cfg, log: cfg.Logger, terminate: term, live: make(map[string]struct{}), stop: make(chan struct{})}
	if cfg.Login != nil {
		r.auth, r.authErr = newLocalAuth(cfg.Login)
	}
	return r
}

// Handshake runs the startup phase of one client connection (see the
// package documentation) and returns the session for the proxy to copy.
// A client's CancelRequest for one of the relay's backends is forwarded
// and needs no session (nil, nil).
func (r *Relay) Handshake(ctx context.Context, client net.Conn, dial proxy.DialFunc) (*proxy.Splice, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.StartupTimeout)
	defer cancel()
	log := r.log.With(slog.String("client", client.RemoteAddr().String()))
	lift := deadlineFrom(ctx, client)

	cs, first, err := r.acceptClient(ctx, client)
	if err != nil {
		lift()
		return r.clientLeft(log, fmt.Errorf("relay: client %s: %w", client.RemoteAddr(), err))
	}
	cs.lift = lift
	switch m := first.(type) {
	case *pgproto3.CancelRequest:
		lift()
		if !r.opened(m.ProcessID, m.SecretKey) {
			// Not a session of this endpoint: the request would reach
			// the server (through the tunnel) for a backend of someone
			// else's, so it goes no further, as PostgreSQL ignores a
			// key it does not know.
			log.Info("relay: dropped a cancel request for a backend this endpoint did not open", slog.Uint64("pid", uint64(m.ProcessID)))
			return nil, nil
		}
		up := r.cfg.Upstream
		if err := sendCancel(ctx, &up, DialFunc(dial), m.ProcessID, m.SecretKey); err != nil {
			log.Warn("relay: could not forward the client's cancel request", slog.Uint64("pid", uint64(m.ProcessID)), slog.Any("error", err))
		} else {
			log.Debug("relay: forwarded the client's cancel request", slog.Uint64("pid", uint64(m.ProcessID)))
		}
		return nil, nil
	case *pgproto3.StartupMessage:
		var s *session
		switch {
		case r.authErr != nil:
			err = r.authErr
			r.tell(ctx, cs, relayError("08001", "pgrelay: the local endpoint cannot authenticate clients", "", ""))
		case r.auth != nil:
			s, err = r.login(ctx, cs, m, log)
		default:
			// The connection's role is its user's: a client logging in
			// as another user does not get it (see Upstream.User).
			if u := r.cfg.Upstream.User; u == "" || m.Parameters["user"] == u {
				for k, v := range r.cfg.Upstream.Params {
					if _, given := m.Parameters[k]; !given && !connection.OptionSets(m.Parameters["options"], k) {
						m.Parameters[k] = v
					}
				}
			}
			s, err = r.start(ctx, cs, m, DialFunc(dial), log)
		}
		if err != nil {
			lift()
			return r.clientLeft(log, err)
		}
		s.dial = DialFunc(dial)
		return s.splice(), nil
	default:
		lift()
		return nil, fmt.Errorf("relay: client %s: unexpected first message %T", client.RemoteAddr(), first)
	}
}

// Close stops the cancel requests the relay is still sending again for
// sessions lost with their stream to the server (Config.CancelRetryFor),
// and waits for them to end: the process is shutting down, and its
// retries would otherwise go on for the rest of CancelRetryFor. Each makes
// one last attempt, bounded by Config.CancelTimeout (an attempt already
// under way when Close is called is its last), so Close returns within
// about CancelTimeout. A cancel request that could not be sent is logged
// at warn level with its backend's PID (its statement may still be
// running on the server) and returned, joined with the others. A session
// that ends after Close has begun has its cancel request sent once and
// not again.
//
// Close neither closes the sessions nor stops new ones from starting:
// close the proxy first (its Close waits for its sessions, whose cancel
// requests are sent as they end). It is safe to call more than once and
// from several goroutines; every call waits for the retries to end and
// returns the same error.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closing = true
		r.mu.Unlock()
		close(r.stop)
	})
	r.retries.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.undelivered...)
}

// PendingCancels returns how many sessions lost with their stream to the
// server have a cancel request the relay is still trying to send (see
// Config.CancelRetryFor); zero once Close has returned.
func (r *Relay) PendingCancels() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.retrying
}

// startRetry counts a session whose cancel request is to be sent again,
// unless Close has begun (false).
func (r *Relay) startRetry() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.retrying++
	r.retries.Add(1)
	return true
}

// retryEnded records the end of a session's retries; err, when not nil,
// is why its cancel request was not sent before Close.
func (r *Relay) retryEnded(err error) {
	r.mu.Lock()
	r.retrying--
	if err != nil {
		r.undelivered = append(r.undelivered, err)
	}
	r.mu.Unlock()
	r.retries.Done()
}

// track records that b's session is open (on) or over (off).
func (r *Relay) track(b Backend, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.live[b.key()] = struct{}{}
	} else {
		delete(r.live, b.key())
	}
}

// opened reports whether a session of the relay has the backend of pid
// and key open.
func (r *Relay) opened(pid uint32, key []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.live[Backend{PID: pid, SecretKey: key}.key()]
	return ok
}

// clientGoneError is a client that closed its connection during the
// startup phase, as psql does when the server asks for a password it
// does not have yet (it asks the user, then connects again) and as port
// probes do.
type clientGoneError struct{ err error }

func (e *clientGoneError) Error() string { return "the client closed the connection: " + e.err.Error() }
func (e *clientGoneError) Unwrap() error { return e.err }

// clientGone marks err as the client's end of stream when it is one.
func clientGone(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &clientGoneError{err}
	}
	return err
}

// clientLeft ends a startup that failed: a client that simply left is
// logged at debug level and needs nothing more from the proxy; any other
// failure is the proxy's to log.
func (r *Relay) clientLeft(log *slog.Logger, err error) (*proxy.Splice, error) {
	var gone *clientGoneError
	if errors.As(err, &gone) {
		log.Debug("relay: the client left during the startup phase", slog.Any("error", err))
		return nil, nil
	}
	return nil, err
}

// clientSide is the client's connection during the startup phase.
type clientSide struct {
	conn net.Conn // the accepted connection, or a TLS session over it
	br   *bufio.Reader
	be   *pgproto3.Backend
	tls  bool
	lift func() // lifts the startup deadline of the accepted connection
}

// maxAuthMessageLen bounds the body of each authentication message a
// client sends (PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH): pgproto3 reserves
// a message's announced length before reading it, and a client that has
// not logged in yet must not make the relay reserve gigabytes.
const maxAuthMessageLen = 65535

// newClientSide reads conn through a buffer that pgproto3 takes one byte
// at a time, so that its own reader never holds bytes past the message it
// decodes: what the client sent beyond the startup phase stays in br.
func newClientSide(conn net.Conn, isTLS bool) *clientSide {
	br := bufio.NewReader(conn)
	be := pgproto3.NewBackend(byteReader{br}, conn)
	be.SetMaxBodyLen(maxAuthMessageLen)
	return &clientSide{conn: conn, br: br, be: be, tls: isTLS}
}

// acceptClient reads the client's first message, answering SSLRequest and
// GSSENCRequest on the way, and returns a StartupMessage or a
// CancelRequest.
func (r *Relay) acceptClient(ctx context.Context, raw net.Conn) (*clientSide, pgproto3.FrontendMessage, error) {
	cs := newClientSide(raw, false)
	askedSSL, askedGSS := false, false
	for {
		msg, err := cs.be.ReceiveStartupMessage()
		if err != nil {
			return nil, nil, fmt.Errorf("read startup message: %w", clientGone(err))
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if askedSSL {
				return nil, nil, errors.New("a second SSL request")
			}
			askedSSL = true
			if cs.br.Buffered() > 0 {
				// Bytes sent in the clear after the request must not be
				// taken as coming through TLS.
				return nil, nil, errors.New("data received after the SSL request, before the TLS handshake")
			}
			if r.cfg.LocalTLS == nil {
				if _, err := raw.Write([]byte{'N'}); err != nil {
					return nil, nil, fmt.Errorf("refuse TLS: %w", err)
				}
				continue
			}
			if _, err := raw.Write([]byte{'S'}); err != nil {
				return nil, nil, fmt.Errorf("accept TLS: %w", err)
			}
			tc := tls.Server(raw, r.cfg.LocalTLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, nil, fmt.Errorf("TLS handshake: %w", err)
			}
			cs = newClientSide(tc, true)
		case *pgproto3.GSSEncRequest:
			if askedGSS || askedSSL {
				return nil, nil, errors.New("an unexpected GSSAPI encryption request")
			}
			askedGSS = true
			if cs.br.Buffered() > 0 {
				return nil, nil, errors.New("data received after the GSSAPI encryption request")
			}
			if _, err := raw.Write([]byte{'N'}); err != nil {
				return nil, nil, fmt.Errorf("refuse GSSAPI encryption: %w", err)
			}
		case *pgproto3.StartupMessage:
			sm := *m
			return cs, &sm, nil
		case *pgproto3.CancelRequest:
			c := *m
			return cs, &c, nil
		default:
			return nil, nil, fmt.Errorf("unexpected startup message %T", m)
		}
	}
}

// upstreamSide is the server's connection during the startup phase.
type upstreamSide struct {
	conn      net.Conn
	br        *bufio.Reader
	fe        *pgproto3.Frontend
	encrypted bool
	lift      func() // lifts the startup deadline
}

// relayError is an ErrorResponse the relay sends in the server's place.
func relayError(code, msg, detail, hint string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code,
		Message: msg, Detail: detail, Hint: hint}
}

// refusedMethod is the error a client gets when the server asks for an
// authentication method the connection's require_auth does not accept
// (nil when it does).
func (r *Relay) refusedMethod(method string) *pgproto3.ErrorResponse {
	policy := r.cfg.Upstream.RequireAuth
	if connection.PolicyAccepts(policy, method) {
		return nil
	}
	if method == "password" && !r.cfg.Upstream.TLS.Mode.Verifies() {
		return relayError("28000", "pgrelay: the server asked for the password in clear text over a connection whose server certificate is not verified; pgrelay sent nothing",
			fmt.Sprintf("The connection's sslmode is %s, so anyone on the path to %s could read the password.", r.cfg.Upstream.TLS.Mode, r.cfg.Upstream.Addr),
			"Have the server use SCRAM (pg_hba.conf method scram-sha-256), verify it (the connection's sslmode verify-full with its CA certificate), "+
				"or accept clear text knowingly (the connection's require_auth, e.g. password,scram-sha-256); `pgrelay connection test` says how.")
	}
	return relayError("28000", fmt.Sprintf("pgrelay: the server asked for %s authentication, which the connection's require_auth (%q) does not accept; pgrelay sent nothing", method, policy),
		"", "Change the server's pg_hba.conf method, or the connection's require_auth.")
}

// retriable reports whether a server's refusal lets the next way of
// opening the database hop be tried, as pgx does: all but a wrong
// password, a missing database and a missing CONNECT privilege.
func retriable(e *pgproto3.ErrorResponse) bool {
	switch e.Code {
	case "28P01", "3D000", "42501":
		return false
	}
	return true
}

// connect opens the database hop and sends the StartupMessage, trying
// each way the sslmode allows while the server refuses before anything
// reached the client. It returns the server's first message, which is the
// first thing to pass on to the client. On failure the client has been
// told why.
func (r *Relay) connect(ctx context.Context, cs *clientSide, sm *pgproto3.StartupMessage, dial DialFunc) (*upstreamSide, pgproto3.BackendMessage, error) {
	up := r.cfg.Upstream
	var lastErr error
	var refusal *pgproto3.ErrorResponse
	attempts := up.TLS.attempts()
	for i, a := range attempts {
		if i > 0 && a == plainAttempt && attempts[i-1] == tlsOrPlainAttempt && lastErr == nil && refusal == nil {
			break
		}
		conn, encrypted, err := up.open(ctx, dial, a)
		if err != nil {
			lastErr, refusal = err, nil
			continue
		}
		us := &upstreamSide{conn: conn, br: bufio.NewReader(conn), encrypted: encrypted, lift: deadlineFrom(ctx, conn)}
		us.fe = pgproto3.NewFrontend(byteReader{us.br}, conn)
		us.fe.Send(sm)
		var first pgproto3.BackendMessage
		if err = us.fe.Flush(); err == nil {
			first, err = us.fe.Receive()
		}
		if err != nil {
			_ = conn.Close()
			lastErr, refusal = fmt.Errorf("start a session on %s: %w", up.Addr, err), nil
			continue
		}
		if e, ok := first.(*pgproto3.ErrorResponse); ok && retriable(e) && i < len(attempts)-1 {
			_ = conn.Close()
			refusal = copyError(e)
			lastErr = fmt.Errorf("server %s refused the session: %s (SQLSTATE %s)", up.Addr, e.Message, e.Code)
			continue
		}
		return us, first, nil
	}
	if refusal != nil {
		r.tell(ctx, cs, refusal)
	} else {
		r.tell(ctx, cs, relayError("08001", fmt.Sprintf("pgrelay could not connect to the database server at %s: %v", up.Addr, lastErr),
			"", "Test the connection with `pgrelay connection test`."))
	}
	return nil, nil, lastErr
}

func copyError(e *pgproto3.ErrorResponse) *pgproto3.ErrorResponse {
	c := *e
	c.UnknownFields = nil
	if e.UnknownFields != nil {
		c.UnknownFields = make(map[byte]string, len(e.UnknownFields))
		for k, v := range e.UnknownFields {
			c.UnknownFields[k] = v
		}
	}
	return &c
}

// start relays the startup phase from the StartupMessage to ReadyForQuery.
func (r *Relay) start(ctx context.Context, cs *clientSide, sm *pgproto3.StartupMessage, dial DialFunc, log *slog.Logger) (*session, error) {
	us, msg, err := r.connect(ctx, cs, sm, dial)
	if err != nil {
		return nil, fmt.Errorf("relay: client %s: %w", cs.conn.RemoteAddr(), err)
	}
	b := Backend{
		User:            sm.Parameters["user"],
		Database:        sm.Parameters["database"],
		ApplicationName: sm.Parameters["application_name"],
		Client:          cs.conn.RemoteAddr().String(),
		Encrypted:       us.encrypted,
		Params:          make(map[string]string),
	}
	if b.Database == "" {
		b.Database = b.User
	}
	fail := func(err error) (*session, error) {
		_ = us.conn.Close()
		return nil, fmt.Errorf("relay: client %s: startup: %w", cs.conn.RemoteAddr(), err)
	}
	// tellClient ends the startup with an error of the relay's.
	tellClient := func(e *pgproto3.ErrorResponse, err error) (*session, error) {
		r.tell(ctx, cs, e)
		return fail(err)
	}
	offeredPlus := false
	for {
		var clientMsg pgproto3.FrontendMessage
		switch m := msg.(type) {
		case *pgproto3.AuthenticationOk:
			cs.be.Send(m)
		case *pgproto3.AuthenticationCleartextPassword:
			if e := r.refusedMethod("password"); e != nil {
				return tellClient(e, errors.New("the server asked for the password in clear text, which require_auth refuses"))
			}
			clientMsg, err = r.authStep(cs, m, pgproto3.AuthTypeCleartextPassword)
		case *pgproto3.AuthenticationMD5Password:
			if e := r.refusedMethod("md5"); e != nil {
				return tellClient(e, errors.New("the server asked for MD5 authentication, which require_auth refuses"))
			}
			clientMsg, err = r.authStep(cs, m, pgproto3.AuthTypeMD5Password)
		case *pgproto3.AuthenticationSASL:
			if e := r.refusedMethod("scram-sha-256"); e != nil {
				return tellClient(e, errors.New("the server asked for SCRAM authentication, which require_auth refuses"))
			}
			offeredPlus = slices.Contains(m.AuthMechanisms, scramPlus)
			mechs := slices.DeleteFunc(slices.Clone(m.AuthMechanisms), func(s string) bool { return s == scramPlus })
			clientMsg, err = r.authStep(cs, &pgproto3.AuthenticationSASL{AuthMechanisms: mechs}, pgproto3.AuthTypeSASL)
			if ir, ok := clientMsg.(*pgproto3.SASLInitialResponse); ok && err == nil && offeredPlus &&
				us.encrypted && cs.tls && len(ir.Data) > 0 && ir.Data[0] == 'y' {
				// The client supports channel binding and, not offered it,
				// says so ("y"); a server that supports it must then refuse
				// the login (RFC 5802), and ours does over TLS.
				return tellClient(relayError("08P01", "pgrelay: SCRAM channel binding cannot pass through pgrelay's local endpoint",
					"The client uses TLS to the local endpoint with channel binding enabled, and the server supports channel binding; "+
						"the server sees pgrelay's TLS session, not the client's.",
					"Connect to the local endpoint with channel_binding=disable (PGCHANNELBINDING=disable), or with sslmode=disable or prefer; "+
						"pgrelay encrypts and verifies the database connection according to the saved connection's sslmode."),
					&clientRefused{errors.New("the client asked for channel binding, which cannot pass through the relay")})
			}
		case *pgproto3.AuthenticationSASLContinue:
			clientMsg, err = r.authStep(cs, m, pgproto3.AuthTypeSASLContinue)
		case *pgproto3.AuthenticationSASLFinal:
			cs.be.Send(m)
		case *pgproto3.AuthenticationGSS, *pgproto3.AuthenticationGSSContinue:
			return tellClient(relayError("28000", "pgrelay: GSSAPI authentication cannot pass through pgrelay's local endpoint", "",
				"Use password or SCRAM authentication for this role."), errors.New("the server asked for GSSAPI authentication"))
		case *pgproto3.BackendKeyData:
			b.PID = m.ProcessID
			b.SecretKey = slices.Clone(m.SecretKey)
			cs.be.Send(m)
		case *pgproto3.ParameterStatus:
			b.Params[m.Name] = m.Value
			cs.be.Send(m)
		case *pgproto3.NoticeResponse, *pgproto3.NegotiateProtocolVersion:
			cs.be.Send(m)
		case *pgproto3.ErrorResponse:
			// The server refused: the client hears it as the server said it.
			cs.be.Send(m)
			_ = cs.be.Flush()
			refused := &RefusedError{Err: pgconn.ErrorResponseToPgError(m), User: b.User}
			if r.cfg.Refused != nil {
				r.cfg.Refused(refused)
			}
			return fail(refused)
		case *pgproto3.ReadyForQuery:
			if b.PID == 0 {
				return tellClient(relayError("08P01", "pgrelay: the server sent no BackendKeyData", "", ""),
					errors.New("the server sent no BackendKeyData"))
			}
			cs.be.Send(m) // sent by ready, once the backend is reported
			return r.ready(ctx, cs, us, b, log)
		default:
			return tellClient(relayError("08P01", fmt.Sprintf("pgrelay: unexpected message %T from the server during the startup phase", m), "", ""),
				fmt.Errorf("unexpected message %T from the server", m))
		}
		if err != nil {
			var gone *clientGoneError
			if timedOut(ctx) && !errors.As(err, &gone) {
				// The client was too slow to answer (see tell).
				r.tell(ctx, cs, nil)
			}
			return fail(err)
		}
		if clientMsg != nil {
			us.fe.Send(clientMsg)
			if err := us.fe.Flush(); err != nil {
				return fail(fmt.Errorf("send the client's authentication message to the server: %w", err))
			}
		}
		if msg, err = us.fe.Receive(); err != nil {
			return tellClient(relayError("08006", fmt.Sprintf("pgrelay: the connection to the database server at %s broke during the startup phase", r.cfg.Upstream.Addr),
				err.Error(), ""), fmt.Errorf("read from the server: %w", err))
		}
	}
}

// tell ends the startup phase with an error for the client: e, or, once
// the startup has run out of time, an error that says so (which is why
// whatever failed failed: an i/o time-out, a dial given up), sent under a
// short deadline of its own, as the startup's is the client connection's
// too. A client that is not told gets only a closed connection (libpq:
// "server closed the connection unexpectedly", "SSL SYSCALL error: EOF
// detected"). e may be nil when only a time-out is to be told.
func (r *Relay) tell(ctx context.Context, cs *clientSide, e *pgproto3.ErrorResponse) {
	if timedOut(ctx) {
		detail := "The database server or the SSH bastion did not answer in time."
		if e != nil {
			detail = e.Message
		}
		e = relayError("08006", fmt.Sprintf("pgrelay: the session did not start within %s", r.cfg.StartupTimeout), detail,
			"The bastion, the database server or this machine may be overloaded, for instance by many clients connecting at once: "+
				"try again, or open fewer sessions at once. `pgrelay connection test` times each hop.")
		if cs.lift != nil {
			cs.lift()
		}
		_ = cs.conn.SetWriteDeadline(time.Now().Add(tellTimeout))
	}
	if e == nil {
		return
	}
	cs.be.Send(e)
	_ = cs.be.Flush()
}

// timedOut reports whether ctx has reached its deadline. A connection's
// read or write under the same deadline (deadlineFrom) may fail a moment
// before ctx says so: the clock decides.
func timedOut(ctx context.Context) bool {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// authStep passes an authentication request to the client and returns its
// answer.
func (r *Relay) authStep(cs *clientSide, req pgproto3.BackendMessage, authType uint32) (pgproto3.FrontendMessage, error) {
	cs.be.Send(req)
	if err := cs.be.Flush(); err != nil {
		return nil, fmt.Errorf("send the authentication request to the client: %w", err)
	}
	if err := cs.be.SetAuthType(authType); err != nil {
		return nil, err
	}
	msg, err := cs.be.Receive()
	if err != nil {
		return nil, fmt.Errorf("read the client's authentication message: %w", clientGone(err))
	}
	switch msg.(type) {
	case *pgproto3.PasswordMessage, *pgproto3.SASLInitialResponse, *pgproto3.SASLResponse:
		return msg, nil
	case *pgproto3.Terminate:
		return nil, errors.New("the client ended the session during authentication")
	}
	return nil, fmt.Errorf("unexpected message %T from the client during authentication", msg)
}

// ready finishes the startup phase: it reports the backend, then sends
// the client ReadyForQuery (so an observer knows the backend before the
// client can use it), passes on what either side sent beyond the startup
// phase, lifts the deadlines, and makes the session.
func (r *Relay) ready(ctx context.Context, cs *clientSide, us *upstreamSide, b Backend, log *slog.Logger) (*session, error) {
	b.OpenedAt = time.Now()
	r.track(b, true)
	o := r.cfg.Observer
	if o != nil {
		o.BackendOpened(b)
	}
	fail := func(err error) (*session, error) {
		// The backend is idle, waiting for a query: closing its
		// connection ends it.
		_ = us.conn.Close()
		r.track(b, false)
		if o != nil {
			o.BackendClosed(b, End{How: ClientLost, Err: err, At: time.Now()})
		}
		return nil, fmt.Errorf("relay: client %s: %w", cs.conn.RemoteAddr(), err)
	}
	// Protocol messages the client sent after its last authentication
	// message go first, then ReadyForQuery and what the server sent
	// after it.
	if n := cs.br.Buffered(); n > 0 {
		early, _ := cs.br.Peek(n)
		if _, err := us.conn.Write(early); err != nil {
			return fail(fmt.Errorf("pass on the client's first messages: %w", err))
		}
	}
	if err := cs.be.Flush(); err != nil {
		return fail(fmt.Errorf("send ReadyForQuery to the client: %w", err))
	}
	if n := us.br.Buffered(); n > 0 {
		early, _ := us.br.Peek(n)
		if _, err := cs.conn.Write(early); err != nil {
			return fail(fmt.Errorf("pass on the server's first messages: %w", err))
		}
	}
	us.lift()
	cs.lift()
	if ctx.Err() != nil {
		// The deadline passed as the startup finished: it may still be
		// set on either connection.
		return fail(fmt.Errorf("startup: %w", context.Cause(ctx)))
	}
	s := &session{r: r, b: b, log: log.With(slog.Any("backend", b)),
		client: &clientConn{Conn: cs.conn, terminate: r.terminate}, up: us.conn}
	s.log.Debug("relay: session ready", slog.Bool("encrypted", b.Encrypted))
	return s, nil
}

// byteReader hands out its reader's bytes one at a time. pgproto3's
// reader asks for at least the bytes it needs (io.ReadAtLeast) but takes
// all it is given; one at a time, it gets exactly the message it decodes.
type byteReader struct{ br *bufio.Reader }

func (r byteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c, err := r.br.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = c
	return 1, nil
}

// RefusedError is a session the server refused as it started (a wrong
// password, a database that does not exist): the client got the server's
// error as the server sent it, so it is the client's to tell.
type RefusedError struct {
	// Err is the server's error.
	Err *pgconn.PgError
	// User is the role the client asked for (in login mode, the one
	// Login.Connect logs in as).
	User string
}

func (e *RefusedError) Error() string { return "the server refused the session: " + e.Err.Error() }

// Unwrap returns the server's error.
func (e *RefusedError) Unwrap() error { return e.Err }

// ClientTold reports that the client was given the server's error: the
// proxy logs the session at info level, not as a warning.
func (e *RefusedError) ClientTold() bool { return true }

// clientRefused is a session the relay refused for what the client asked
// (another user than the endpoint's, a replication connection, a wrong
// password of the endpoint, channel binding), having told the client why
// in an ErrorResponse: like a RefusedError, it is the client's to tell.
type clientRefused struct{ err error }

func (e *clientRefused) Error() string { return e.err.Error() }
func (e *clientRefused) Unwrap() error { return e.err }

// ClientTold reports that the client was given the relay's error: the
// proxy logs the session at info level, not as a warning.
func (e *clientRefused) ClientTold() bool { return true }
