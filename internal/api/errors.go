package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/pg"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// Error codes of ErrorBody.Code.
const (
	// CodeInvalidJSON (400): the body is not JSON of the expected shape
	// (syntax, wrong type, unknown field); Fields names the field.
	CodeInvalidJSON = apiwire.CodeInvalidJSON
	// CodeInvalidYAML (400): a jobs file sent as application/yaml is not
	// YAML of the expected shape (syntax, unknown key).
	CodeInvalidYAML = apiwire.CodeInvalidYAML
	// CodeValidationFailed (400): fields have values that are not
	// accepted; Fields has one problem per field.
	CodeValidationFailed = apiwire.CodeValidationFailed
	// CodeUnauthenticated (401): missing, unknown or revoked token, or an
	// invalid session.
	CodeUnauthenticated = apiwire.CodeUnauthenticated
	// CodeForbidden (403): the token's role does not allow the route.
	CodeForbidden = apiwire.CodeForbidden
	// CodeCSRF (403): a cookie-authenticated change without the session's
	// CSRF token.
	CodeCSRF = apiwire.CodeCSRF
	// CodeNotFound (404): no such record, or no such route.
	CodeNotFound = apiwire.CodeNotFound
	// CodeMethodNotAllowed (405): the path exists for other methods.
	CodeMethodNotAllowed = apiwire.CodeMethodNotAllowed
	// CodeAlreadyExists (409): a record with that name exists.
	CodeAlreadyExists = apiwire.CodeAlreadyExists
	// CodeConflict (409): the record changed concurrently; retry.
	CodeConflict = apiwire.CodeConflict
	// CodeTooLarge (413): the body is larger than MaxBodyBytes.
	CodeTooLarge = apiwire.CodeTooLarge
	// CodeUnsupportedMediaType (415): the body is not application/json.
	CodeUnsupportedMediaType = apiwire.CodeUnsupportedMediaType
	// CodeTooManyStreams (429): the token has as many run event streams
	// open as the server allows; close one and retry.
	CodeTooManyStreams = apiwire.CodeTooManyStreams
	// CodeInvalid (422): the request is well formed but cannot be done
	// (e.g. the public key of a connection without tunnel).
	CodeInvalid = apiwire.CodeInvalid
	// CodeHostKeyChanged (502): the bastion presented a host key other
	// than the pinned one; approve it with trust-host-key.
	CodeHostKeyChanged = apiwire.CodeHostKeyChanged
	// CodeKeyNotAuthorized (502): the bastion refused the connection's
	// key; install the public key on the bastion.
	CodeKeyNotAuthorized = apiwire.CodeKeyNotAuthorized
	// CodeBastionError (502): the SSH bastion could not be reached or
	// failed (connect, handshake, forwarding, dropped tunnel).
	CodeBastionError = apiwire.CodeBastionError
	// CodeDatabaseError (502): the database refused the connection or
	// the SQL; DatabaseError carries the SQLSTATE when there is one.
	CodeDatabaseError = apiwire.CodeDatabaseError
	// CodeNetworkDenied (422): the server's network policy refuses the
	// address a connection would dial (--deny-network, or the default
	// denial of link-local and cloud metadata addresses).
	CodeNetworkDenied = apiwire.CodeNetworkDenied
	// CodeUnavailable (503): the server cannot do it now, e.g. queue a
	// run when no job queue is running, or write to a store whose disk is
	// full.
	CodeUnavailable = apiwire.CodeUnavailable
	// CodeTimeout (504): the query did not finish in time.
	CodeTimeout = apiwire.CodeTimeout
	// CodeInternal (500): anything else; the detail is in the server log
	// under the request ID.
	CodeInternal = apiwire.CodeInternal
)

// ErrorResponse is the body of every error response (shared with the
// client: apiwire).
type ErrorResponse = apiwire.ErrorResponse

// ErrorBody describes the error.
type ErrorBody = apiwire.ErrorBody

// DatabaseError is an error reported by the database server.
type DatabaseError = apiwire.DatabaseError

// Fields is a list of field problems that reads and writes JSON as an
// object {field: problem}, keeping the order of the problems.
type Fields = apiwire.Fields

// fields returns validation problems as the error body's fields.
func fields(probs []fielderr.Problem) Fields {
	out := make(Fields, len(probs))
	for i, p := range probs {
		out[i] = apiwire.FieldError{Field: p.Field, Problem: p.Problem}
	}
	return out
}

// apiError is an error that already knows its response.
type apiError struct {
	status  int
	code    string
	message string
	fields  Fields
}

func (e *apiError) Error() string { return e.message }

func fieldError(status int, code, field, problem string) *apiError {
	return &apiError{status: status, code: code, message: "invalid request: " + field + ": " + problem,
		fields: Fields{{Field: field, Problem: problem}}}
}

// classify maps an error to its status and body. Messages of known errors
// are written for users by package app and carry no secret; unknown errors
// get CodeInternal and a message set by writeError.
func classify(err error) (int, ErrorBody) {
	var ae *apiError
	var ve *app.ValidationError
	var mbe *http.MaxBytesError
	var hk *app.HostKeyChangedError
	var kna *app.KeyNotAuthorizedError
	var qe *app.QueryError
	var pge *pgconn.PgError
	var ce *pgconn.ConnectError
	var tce *pg.ConnectError
	var denied *egress.DeniedError
	switch {
	case errors.As(err, &ae):
		return ae.status, ErrorBody{Code: ae.code, Message: ae.message, Fields: ae.fields}
	case errors.As(err, &ve):
		return http.StatusBadRequest, ErrorBody{Code: CodeValidationFailed, Message: validationMessage(ve),
			Fields: fields(ve.Problems)}
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, ErrorBody{Code: CodeTooLarge,
			Message: fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)}
	case errors.Is(err, app.ErrUnauthenticated):
		return http.StatusUnauthorized, ErrorBody{Code: CodeUnauthenticated, Message: err.Error()}
	case errors.Is(err, app.ErrNotFound):
		return http.StatusNotFound, ErrorBody{Code: CodeNotFound, Message: err.Error()}
	case errors.Is(err, app.ErrExists):
		return http.StatusConflict, ErrorBody{Code: CodeAlreadyExists, Message: err.Error()}
	case errors.Is(err, app.ErrConflict):
		return http.StatusConflict, ErrorBody{Code: CodeConflict, Message: err.Error()}
	case errors.Is(err, app.ErrNoQueue):
		return http.StatusServiceUnavailable, ErrorBody{Code: CodeUnavailable, Message: err.Error()}
	case errors.Is(err, app.ErrKeyRotated):
		// A server left running with the old key after `pgrelay
		// master-key rotate` refuses to seal secrets with it; the message
		// says to restart it with the new key.
		return http.StatusServiceUnavailable, ErrorBody{Code: CodeUnavailable, Message: err.Error()}
	case errors.Is(err, secret.ErrOpen):
		// A secret sealed under another master key: most often the key
		// was rotated (master-key rotate) while this server kept the old.
		return http.StatusServiceUnavailable, ErrorBody{Code: CodeUnavailable, Message: "a stored secret cannot be opened with " +
			"this server's master key: if `pgrelay master-key rotate` ran since the server started, restart the server; " +
			"otherwise the stored value was altered (see the server log)"}
	case errors.Is(err, store.ErrFull):
		// The message names the store and the full disk; no secret.
		return http.StatusServiceUnavailable, ErrorBody{Code: CodeUnavailable, Message: err.Error()}
	case errors.Is(err, app.ErrInvalid):
		return http.StatusUnprocessableEntity, ErrorBody{Code: CodeInvalid, Message: err.Error()}
	case errors.Is(err, app.ErrForbidden):
		// The role allows the route but not this change (a pinned host
		// key replaced by an editor); the message says who may.
		return http.StatusForbidden, ErrorBody{Code: CodeForbidden, Message: err.Error()}
	case errors.As(err, &denied):
		// The message names the address, the rule and the setting; no secret.
		return http.StatusUnprocessableEntity, ErrorBody{Code: CodeNetworkDenied, Message: err.Error()}
	case errors.As(err, &hk):
		return http.StatusBadGateway, ErrorBody{Code: CodeHostKeyChanged, Message: err.Error()}
	case errors.As(err, &kna):
		return http.StatusBadGateway, ErrorBody{Code: CodeKeyNotAuthorized, Message: err.Error()}
	case errors.As(err, &qe):
		return http.StatusBadGateway, ErrorBody{Code: CodeDatabaseError, Message: err.Error(),
			DatabaseError: databaseError(qe.Err)}
	case isBastionError(err):
		return http.StatusBadGateway, ErrorBody{Code: CodeBastionError, Message: err.Error()}
	case errors.As(err, &tce):
		// A connection's database could not be reached or refused the
		// login (package app wraps those as *pg.ConnectError); pgconn's
		// connect errors name user, host and database, never the password.
		return http.StatusBadGateway, ErrorBody{Code: CodeDatabaseError, Message: err.Error()}
	case errors.As(err, &pge), errors.As(err, &ce):
		// PostgreSQL errors that package app did not wrap as a
		// connection's (QueryError, *pg.ConnectError) are those of
		// pgrelay's own PostgreSQL store: not the database_error of a
		// connection, and their message (the store's host, database and
		// user) is for the server log only.
		return http.StatusServiceUnavailable, ErrorBody{Code: CodeUnavailable, Message: storeUnavailable("")}
	}
	return http.StatusInternalServerError, ErrorBody{Code: CodeInternal}
}

// storeUnavailable is the message of a request that failed because
// pgrelay's own store could not be reached or refused a statement; id,
// when known, names the request whose server log line has the detail.
// classify gives it without id, and writeError and streamError add it.
func storeUnavailable(id string) string {
	m := "pgrelay's store (its PostgreSQL database) could not be reached or refused the request; " +
		"retry once it is back (the detail is in the server log"
	if id != "" {
		m += " for request " + id
	}
	return m + ")"
}

func isBastionError(err error) bool {
	var (
		de *tunnel.DialError
		he *tunnel.HandshakeError
		me *tunnel.HostKeyMismatchError
		ae *tunnel.AuthError
		fe *tunnel.ForwardError
		dr *tunnel.DroppedError
		hc *tunnel.HostCertificateError
		rv *tunnel.HostKeyRevokedError
		pc *tunnel.ProxyCommandError
	)
	return errors.As(err, &de) || errors.As(err, &he) || errors.As(err, &me) || errors.As(err, &ae) ||
		errors.As(err, &fe) || errors.As(err, &dr) || errors.Is(err, tunnel.ErrClosed) ||
		errors.As(err, &hc) || errors.As(err, &rv) || errors.As(err, &pc)
}

func databaseError(e *pgconn.PgError) *DatabaseError {
	return &DatabaseError{Severity: e.Severity, SQLState: e.Code, Message: e.Message, Detail: e.Detail,
		Hint: e.Hint, Position: e.Position}
}

func validationMessage(ve *app.ValidationError) string {
	var b strings.Builder
	if len(ve.Problems) == 1 {
		b.WriteString("invalid request: ")
	} else {
		fmt.Fprintf(&b, "invalid request (%d problems): ", len(ve.Problems))
	}
	for i, p := range ve.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.Field + ": " + p.Problem)
	}
	return b.String()
}

// writeError writes err as an ErrorResponse. Unknown errors are logged
// with the request's context (so with its request ID) and answered with a
// generic message that names the request ID.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ctx := r.Context()
	status, body := classify(err)
	id := requestid.From(ctx)
	attrs := []any{"method", r.Method, "path", r.URL.Path, "status", status, "error", err}
	if p := auth.PrincipalFrom(ctx); p != nil {
		attrs = append(attrs, "token_id", p.TokenID, "token_name", p.Name)
	}
	switch {
	case body.Code == CodeInternal:
		a.log.ErrorContext(ctx, "api request failed", attrs...)
		body.Message = "internal error; see the server log for request " + id
		if id == "" {
			body.Message = "internal error; see the server log"
		}
	case status >= http.StatusInternalServerError:
		a.log.WarnContext(ctx, "upstream failure", attrs...)
		if body.Message == storeUnavailable("") {
			body.Message = storeUnavailable(id)
		}
	}
	body.RequestID = id
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pgrelay"`)
	}
	if werr := writeJSON(w, status, ErrorResponse{Error: body}); werr != nil {
		a.log.DebugContext(ctx, "write error response", "error", werr)
	}
}

// writeJSON writes v as the JSON response body with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	// Messages and keys hold <, > and &; the Content-Type and nosniff keep
	// browsers from reading the body as HTML.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, err := w.Write(b.Bytes())
	return err
}
