package app

import (
	"errors"

	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/pg"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// IsConnectFailure reports whether err is a failure to reach or log in to
// a connection's bastion or database, or an error the database returned,
// as opposed to a failure of pgrelay itself (a record that cannot be read,
// a keyring failure). The message of such an error is written for users:
// it says what failed and where, and holds no secret, so faces may show
// it; other errors are for the server's log. A connection's database
// errors come wrapped (QueryError, *pg.ConnectError): a bare PostgreSQL
// error is one of pgrelay's own store, whose message (its host and user)
// is not for users.
func IsConnectFailure(err error) bool {
	var (
		hk  *HostKeyChangedError
		kna *KeyNotAuthorizedError
		qe  *QueryError
		ce  *pg.ConnectError
		de  *tunnel.DialError
		he  *tunnel.HandshakeError
		me  *tunnel.HostKeyMismatchError
		ae  *tunnel.AuthError
		fe  *tunnel.ForwardError
		dr  *tunnel.DroppedError
		nd  *egress.DeniedError
		cr  *CertificateRefusedError
		hc  *tunnel.HostCertificateError
		rv  *tunnel.HostKeyRevokedError
		pc  *tunnel.ProxyCommandError
	)
	return errors.As(err, &hk) || errors.As(err, &kna) || errors.As(err, &qe) ||
		errors.As(err, &ce) || errors.As(err, &de) || errors.As(err, &he) || errors.As(err, &me) ||
		errors.As(err, &ae) || errors.As(err, &fe) || errors.As(err, &dr) || errors.Is(err, tunnel.ErrClosed) ||
		errors.As(err, &nd) || errors.As(err, &cr) || errors.As(err, &hc) || errors.As(err, &rv) || errors.As(err, &pc)
}
