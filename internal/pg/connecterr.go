package pg

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// ConnectError is pgx's failure to connect, told shortly. pgx makes several
// attempts (sslmode=prefer tries TLS, then clear text; a name may stand for
// several addresses) and lists the failure of each, so a refused password
// came with "tls error: server refused TLS connection" before it, which
// reads as a second failure although it is only the step prefer takes
// next. Of the attempts, those the server answered with an error (a
// *pgconn.PgError: the password, the database, a setting) are told when
// there are any, the others only when none got that far; the same failure
// is told once. errors.As still finds the *pgconn.ConnectError, and every
// attempt's error, through Unwrap.
type ConnectError struct {
	Err *pgconn.ConnectError
}

// TidyConnectError returns err as a *ConnectError when it is a
// *pgconn.ConnectError, else err itself.
func TidyConnectError(err error) error {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) && err == error(ce) {
		return &ConnectError{Err: ce}
	}
	return err
}

func (e *ConnectError) Error() string {
	joined, ok := errors.Unwrap(e.Err).(interface{ Unwrap() []error })
	if !ok || e.Err.Config == nil {
		return e.Err.Error()
	}
	attempts := joined.Unwrap()
	kept := attempts
	var answered []error
	for _, a := range attempts {
		var pe *pgconn.PgError
		if errors.As(a, &pe) {
			answered = append(answered, a)
		}
	}
	if len(answered) > 0 {
		kept = answered
	}
	var told []string
	for _, a := range kept {
		if m := a.Error(); !slices.Contains(told, m) {
			told = append(told, m)
		}
	}
	if len(told) == len(attempts) || len(told) == 0 {
		return e.Err.Error()
	}
	prefix := fmt.Sprintf("failed to connect to `user=%s database=%s`:", e.Err.Config.User, e.Err.Config.Database)
	if len(told) == 1 {
		return prefix + " " + told[0]
	}
	return prefix + "\n\t" + strings.Join(told, "\n\t")
}

// Unwrap returns pgx's error.
func (e *ConnectError) Unwrap() error { return e.Err }
