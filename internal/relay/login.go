package relay

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/pgrelay/pgrelay/internal/secret"
)

// Login makes the relay authenticate each client itself and log in to the
// server with credentials the client never sees: a connection's stored
// password, or an expiring token that pgrelay fetches (see package
// credential). A client can then send nothing but the endpoint's own
// password anywhere else.
//
// The client proves with SCRAM-SHA-256 that it knows Password, a random
// password of the endpoint (per run, or per `pgrelay proxy` of a token
// connection) that is handed to the commands as PGPASSWORD; over TLS to
// the endpoint, SCRAM-SHA-256-PLUS with tls-server-end-point channel
// binding is offered too. Only then is Connect called, so a local process
// that does not know the password cannot make pgrelay fetch tokens or open
// server sessions. The server's session is opened by Connect (pgconn, with
// the connection's TLS, require_auth policy and credential) and taken over
// with Hijack: the client gets AuthenticationOk, the server's
// ParameterStatus values, its BackendKeyData (so the client's own cancel
// requests work) and ReadyForQuery, and the proxy splices the two as for
// any session. A server's refusal reaches the client as the server said it,
// and Config.Refused.
type Login struct {
	// Password is what clients authenticate with.
	Password secret.Value
	// User is the only user name clients may ask for: the connection's
	// user, as whom Connect logs in.
	User string
	// Connect opens an authenticated, idle session with the server for a
	// client's startup parameters (the database, application_name,
	// options, ...; never the user). Errors that have a Hint() method
	// (credential errors) have the hint passed on to the client.
	Connect func(ctx context.Context, params map[string]string) (*pgconn.PgConn, error)
}

// LoginStartupTimeout is the startup timeout of a relay in login mode for
// a connection whose token may take fetch to come (a credential command's
// timeout, or an HTTP fetch with its retries): the default plus fetch.
func LoginStartupTimeout(fetch time.Duration) time.Duration { return DefaultStartupTimeout + fetch }

// scramIterations is the PBKDF2 iteration count of the endpoint's SCRAM
// verifier, PostgreSQL's default.
const scramIterations = 4096

// localAuth is a Login prepared for SCRAM: the server with the verifier.
type localAuth struct {
	login  *Login
	server *scram.Server
}

// newLocalAuth derives the SCRAM verifier of l's password once.
func newLocalAuth(l *Login) (*localAuth, error) {
	if l.Password.IsZero() {
		return nil, errors.New("relay: login: no password for the local endpoint")
	}
	if l.Connect == nil {
		return nil, errors.New("relay: login: no Connect function")
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("relay: login: salt: %w", err)
	}
	client, err := scram.SHA256.NewClient("", l.Password.Reveal(), "")
	if err != nil {
		return nil, fmt.Errorf("relay: login: SCRAM verifier: %w", err)
	}
	creds, err := client.GetStoredCredentialsWithError(scram.KeyFactors{Salt: string(salt), Iters: scramIterations})
	if err != nil {
		return nil, fmt.Errorf("relay: login: SCRAM verifier: %w", err)
	}
	// PostgreSQL takes the user from the startup message; libpq sends an
	// empty SCRAM user name. Every name gets the one verifier.
	server, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return creds, nil })
	if err != nil {
		return nil, fmt.Errorf("relay: login: SCRAM server: %w", err)
	}
	return &localAuth{login: l, server: server}, nil
}

// login runs the startup phase of a session in login mode: it checks the
// client's user, authenticates the client, opens the server's session and
// tells the client it is ready.
func (r *Relay) login(ctx context.Context, cs *clientSide, sm *pgproto3.StartupMessage, log *slog.Logger) (*session, error) {
	l := r.auth.login
	fail := func(e *pgproto3.ErrorResponse, err error) (*session, error) {
		if e != nil || timedOut(ctx) {
			r.tell(ctx, cs, e)
		}
		return nil, fmt.Errorf("relay: client %s: %w", cs.conn.RemoteAddr(), err)
	}
	user := sm.Parameters["user"]
	if user != l.User {
		return fail(relayError("28000", fmt.Sprintf("pgrelay: this endpoint logs in as user %q only, not %q", l.User, user), "",
			fmt.Sprintf("Connect with user=%s (PGUSER); pgrelay logs in to the server with the connection's credentials.", l.User)),
			&clientRefused{fmt.Errorf("the client asked for user %q; the endpoint logs in as %q", user, l.User)})
	}
	if _, ok := sm.Parameters["replication"]; ok {
		return fail(relayError("0A000", "pgrelay: replication connections cannot pass through pgrelay's local endpoint", "", ""),
			&clientRefused{errors.New("the client asked for a replication connection")})
	}
	if err := r.authenticate(cs); err != nil {
		var re *refusal
		if errors.As(err, &re) {
			return fail(re.resp, &clientRefused{err})
		}
		return fail(nil, clientGone(err))
	}
	params := maps.Clone(sm.Parameters)
	delete(params, "user")
	pc, err := l.Connect(ctx, params)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			// The server refused the session (a wrong stored password, a
			// database that does not exist): the client hears the
			// server's error, as when authentication passes through.
			refused := &RefusedError{Err: pe, User: l.User}
			if r.cfg.Refused != nil {
				r.cfg.Refused(refused)
			}
			err = refused
		}
		return fail(r.upstreamRefusal(err), fmt.Errorf("log in to the server: %w", err))
	}
	if err := pc.SyncConn(ctx); err != nil {
		_ = pc.Close(context.WithoutCancel(ctx))
		return fail(relayError("08006", fmt.Sprintf("pgrelay: the session with the database server at %s broke as it started", r.cfg.Upstream.Addr), "", ""),
			fmt.Errorf("sync the server's session: %w", err))
	}
	hc, err := pc.Hijack()
	if err != nil {
		_ = pc.Close(context.WithoutCancel(ctx))
		return fail(relayError("08006", "pgrelay: could not take over the server's session", "", ""), fmt.Errorf("take over the server's session: %w", err))
	}
	b := Backend{
		User:            l.User,
		Database:        sm.Parameters["database"],
		ApplicationName: sm.Parameters["application_name"],
		Client:          cs.conn.RemoteAddr().String(),
		Encrypted:       hc.TLSConfig != nil,
		PID:             hc.PID,
		SecretKey:       slices.Clone(hc.SecretKey),
		Params:          maps.Clone(hc.ParameterStatuses),
	}
	if b.Database == "" {
		b.Database = b.User
	}
	if b.Params == nil {
		b.Params = map[string]string{}
	}
	cs.be.Send(&pgproto3.AuthenticationOk{})
	for _, k := range slices.Sorted(maps.Keys(b.Params)) {
		cs.be.Send(&pgproto3.ParameterStatus{Name: k, Value: b.Params[k]})
	}
	cs.be.Send(&pgproto3.BackendKeyData{ProcessID: b.PID, SecretKey: b.SecretKey})
	tx := hc.TxStatus
	if tx == 0 {
		tx = 'I'
	}
	cs.be.Send(&pgproto3.ReadyForQuery{TxStatus: tx})
	us := &upstreamSide{conn: hc.Conn, br: bufio.NewReader(hc.Conn), encrypted: b.Encrypted, lift: func() {}}
	return r.ready(ctx, cs, us, b, log)
}

// refusal is an authentication failure to tell the client.
type refusal struct {
	resp *pgproto3.ErrorResponse
	err  error
}

func (e *refusal) Error() string { return e.err.Error() }
func (e *refusal) Unwrap() error { return e.err }

// authenticate runs the SCRAM exchange with the client.
func (r *Relay) authenticate(cs *clientSide) error {
	mechs := []string{"SCRAM-SHA-256"}
	var cb scram.ChannelBinding
	if cs.tls && r.cfg.LocalTLS != nil && len(r.cfg.LocalTLS.Certificates) > 0 {
		if leaf := r.cfg.LocalTLS.Certificates[0].Leaf; leaf != nil {
			// tls-server-end-point: the hash of the endpoint's own
			// certificate, which is what the client saw.
			st := tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
			if b, err := scram.NewTLSServerEndpointBinding(&st); err == nil {
				cb = b
				mechs = []string{scramPlus, "SCRAM-SHA-256"}
			}
		}
	}
	conv := r.auth.server.NewConversation()
	if cb.IsSupported() {
		conv = r.auth.server.NewConversationWithChannelBinding(cb)
	}
	refuse := func(err error) error {
		return &refusal{err: err, resp: relayError("28P01", fmt.Sprintf("password authentication failed for user %q", r.auth.login.User),
			"pgrelay's local endpoint checks the password itself: it is not the database's password.",
			"Use the password pgrelay gave for this endpoint: PGPASSWORD in a run's commands, or the one `pgrelay proxy` printed.")}
	}
	msg, err := r.authStep(cs, &pgproto3.AuthenticationSASL{AuthMechanisms: mechs}, pgproto3.AuthTypeSASL)
	if err != nil {
		return err
	}
	first, ok := msg.(*pgproto3.SASLInitialResponse)
	if !ok || !slices.Contains(mechs, first.AuthMechanism) {
		return &refusal{err: errors.New("the client did not answer with a SCRAM mechanism"), resp: relayError("28000",
			"pgrelay: the local endpoint accepts SCRAM-SHA-256 authentication only", "",
			"Use a client that supports SCRAM-SHA-256 (libpq 10 or later, any current driver).")}
	}
	serverFirst, err := conv.Step(string(first.Data))
	if err != nil {
		return refuse(fmt.Errorf("SCRAM client-first message: %w", err))
	}
	msg, err = r.authStep(cs, &pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)}, pgproto3.AuthTypeSASLContinue)
	if err != nil {
		return err
	}
	final, ok := msg.(*pgproto3.SASLResponse)
	if !ok {
		return refuse(fmt.Errorf("unexpected %T from the client during SCRAM", msg))
	}
	serverFinal, err := conv.Step(string(final.Data))
	if err != nil || !conv.Valid() {
		if err == nil {
			err = errors.New("invalid proof")
		}
		return refuse(fmt.Errorf("the client's SCRAM proof: %w", err))
	}
	cs.be.Send(&pgproto3.AuthenticationSASLFinal{Data: []byte(serverFinal)})
	return nil
}

// upstreamRefusal is what the client is told when Connect failed: the
// server's own error as it said it, or the relay's with the error's hint.
func (r *Relay) upstreamRefusal(err error) *pgproto3.ErrorResponse {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return &pgproto3.ErrorResponse{Severity: pe.Severity, SeverityUnlocalized: pe.SeverityUnlocalized, Code: pe.Code,
			Message: pe.Message, Detail: pe.Detail, Hint: pe.Hint}
	}
	hint := "Test the connection with `pgrelay connection test`."
	var h interface{ Hint() string }
	if errors.As(err, &h) && h.Hint() != "" {
		hint = h.Hint()
	}
	return relayError("08001", fmt.Sprintf("pgrelay could not log in to the database server at %s: %v", r.cfg.Upstream.Addr, err), "", hint)
}
