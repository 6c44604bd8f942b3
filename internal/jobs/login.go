package jobs

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/connection"
)

// EndpointLogin is implemented by a Conn that can log in to the server
// itself (package app's Session). A run's local endpoint never hands the
// commands a stored credential: when the connection has one, a password
// (of auth kind password) or an expiring token that pgrelay fetches (auth
// kinds command, lakebase, alloydb-iam), the endpoint authenticates the
// commands itself, with a random password made for the run and handed to
// them as PGPASSWORD, and logs in to the server with the credential for
// each session (relay.Login), as the connection's user only. So a command
// can send nothing but the run's password elsewhere (psql -h other.host),
// and a dbt run longer than a token's lifetime opens new sessions all
// along. A connection without a credential (trust or peer
// authentication) has its authentication pass through.
type EndpointLogin interface {
	// TokenAuth reports whether the connection logs in with tokens.
	TokenAuth() bool
	// LoginUpstream opens an authenticated, idle session with the server
	// for a client's startup parameters (database, application_name,
	// options, ...).
	LoginUpstream(ctx context.Context, params map[string]string) (*pgconn.PgConn, error)
}

// endpointLogin returns conn as an EndpointLogin when the run's endpoint
// must log in to the server itself: the connection has a stored password
// or logs in with tokens. It returns nil when the connection has no
// credential (authentication passes through), and an error when it has
// one but conn cannot log in itself: the commands would need the
// credential, which they must not get.
func endpointLogin(conn Conn) (EndpointLogin, error) {
	el, ok := conn.(EndpointLogin)
	if ok && el.TokenAuth() {
		return el, nil
	}
	spec := conn.Spec()
	if spec.Password.IsZero() && !spec.AuthKind().IsToken() {
		return nil, nil
	}
	if !ok {
		return nil, fmt.Errorf("connection %s: the run's local endpoint cannot log in to the server itself, "+
			"and commands never get the connection's credential", spec.Name)
	}
	return el, nil
}

// tokenFetchTime bounds how long a token may take to come for spec: its
// command's timeout, or a minute for the HTTP sources (retries included).
func tokenFetchTime(spec *connection.Spec) time.Duration {
	if spec.AuthKind() == connection.AuthCommand && spec.Auth.Timeout > 0 {
		return spec.Auth.Timeout.Duration()
	}
	return time.Minute
}

// newRunPassword returns a random password for a run's local endpoint: 32
// bytes of entropy in URL-safe base64, which needs no quoting anywhere.
func newRunPassword() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make the local endpoint's password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// profileComments are the lines of profiles.yml that say how the password
// and a pooler are handled, as YAML comments; login is set when the
// endpoint logs in to the server itself (see EndpointLogin).
func profileComments(spec *connection.Spec, login bool) string {
	var b strings.Builder
	if login {
		with := "the connection's stored password, which commands never see"
		if spec.AuthKind().IsToken() {
			with = fmt.Sprintf("the connection's %s token, a fresh one\n"+
				"# whenever it nears its expiry, so the run may outlast any one token", spec.AuthKind())
		}
		fmt.Fprintf(&b, "# The password is this run's own password of pgrelay's local endpoint (PGPASSWORD), not a database\n"+
			"# credential: pgrelay logs in to the database itself, as the connection's user only, with\n# %s.\n", with)
	}
	switch spec.EffectivePooler() {
	case connection.PoolerTransaction:
		b.WriteString("# The database is behind a connection pooler in transaction mode (pooler: transaction): each\n" +
			"# transaction may run on another server connection, so session state (SET, temporary tables,\n" +
			"# advisory locks, named prepared statements) does not last past a transaction. dbt-postgres\n" +
			"# works as it is (it prepares no statements); hooks that rely on session state do not.\n")
	case connection.PoolerSession:
		b.WriteString("# The database is behind a connection pooler in session mode (pooler: session): each session\n" +
			"# keeps one server connection, so everything works as without a pooler.\n")
	default:
		b.WriteString("# No connection pooler in front of the database (pooler: none). Behind a pooler in transaction\n" +
			"# mode, set the connection's pooler to transaction.\n")
	}
	return b.String()
}
