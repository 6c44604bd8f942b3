package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// Error codes of ErrorBody.Code.
const (
	// CodeInvalidJSON (400): the body is not JSON of the expected shape
	// (syntax, wrong type, unknown field); Fields names the field.
	CodeInvalidJSON = "invalid_json"
	// CodeInvalidYAML (400): a jobs file sent as application/yaml is not
	// YAML of the expected shape (syntax, unknown key).
	CodeInvalidYAML = "invalid_yaml"
	// CodeValidationFailed (400): fields have values that are not
	// accepted; Fields has one problem per field.
	CodeValidationFailed = "validation_failed"
	// CodeUnauthenticated (401): missing, unknown or revoked token, or an
	// invalid session.
	CodeUnauthenticated = "unauthenticated"
	// CodeForbidden (403): the token's role does not allow the route.
	CodeForbidden = "forbidden"
	// CodeCSRF (403): a cookie-authenticated change without the session's
	// CSRF token.
	CodeCSRF = "csrf"
	// CodeNotFound (404): no such record, or no such route.
	CodeNotFound = "not_found"
	// CodeMethodNotAllowed (405): the path exists for other methods.
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeAlreadyExists (409): a record with that name exists.
	CodeAlreadyExists = "already_exists"
	// CodeConflict (409): the record changed concurrently; retry.
	CodeConflict = "conflict"
	// CodeTooLarge (413): the body is larger than MaxBodyBytes.
	CodeTooLarge = "too_large"
	// CodeUnsupportedMediaType (415): the body is not application/json.
	CodeUnsupportedMediaType = "unsupported_media_type"
	// CodeTooManyStreams (429): the token has as many run event streams
	// open as the server allows; close one and retry.
	CodeTooManyStreams = "too_many_streams"
	// CodeInvalid (422): the request is well formed but cannot be done
	// (e.g. the public key of a connection without tunnel).
	CodeInvalid = "invalid"
	// CodeHostKeyChanged (502): the bastion presented a host key other
	// than the pinned one; approve it with trust-host-key.
	CodeHostKeyChanged = "host_key_changed"
	// CodeKeyNotAuthorized (502): the bastion refused the connection's
	// key; install the public key on the bastion.
	CodeKeyNotAuthorized = "key_not_authorized"
	// CodeBastionError (502): the SSH bastion could not be reached or
	// failed (connect, handshake, forwarding, dropped tunnel).
	CodeBastionError = "bastion_error"
	// CodeDatabaseError (502): the database refused the connection or
	// the SQL; DatabaseError carries the SQLSTATE when there is one.
	CodeDatabaseError = "database_error"
	// CodeNetworkDenied (422): the server's network policy refuses the
	// address a connection would dial (--deny-network, or the default
	// denial of link-local and cloud metadata addresses).
	CodeNetworkDenied = "network_denied"
	// CodeUnavailable (503): the server cannot do it now, e.g. queue a
	// run when no job queue is running, or write to a store whose disk is
	// full.
	CodeUnavailable = "unavailable"
	// CodeTimeout (504): the query did not finish in time.
	CodeTimeout = "timeout"
	// CodeInternal (500): anything else; the detail is in the server log
	// under the request ID.
	CodeInternal = "internal"
)

// ErrorResponse is the body of every error response.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody describes an error.
type ErrorBody struct {
	// Code is one of the Code constants; programs branch on it.
	Code string `json:"code"`
	// Message says what failed and what to do, for people.
	Message string `json:"message"`
	// Fields maps a request field (JSON path, e.g. "ssh_tunnel.port") to
	// its problem.
	Fields Fields `json:"fields,omitempty"`
	// RequestID identifies the request in the server log.
	RequestID string `json:"request_id,omitempty"`
	// DatabaseError is the database server's error, for database_error.
	DatabaseError *DatabaseError `json:"database_error,omitempty"`
}

// DatabaseError is an error reported by the PostgreSQL server.
type DatabaseError struct {
	Severity string `json:"severity"`
	// SQLState is the SQLSTATE code, e.g. 42P01.
	SQLState string `json:"sqlstate"`
	Message  string `json:"message"`
	Detail   string `json:"detail,omitempty"`
	Hint     string `json:"hint,omitempty"`
	// Position is the 1-based character position of the error in the SQL,
	// or 0.
	Position int32 `json:"position,omitempty"`
}

// Fields is a list of field problems that reads and writes JSON as an
// object {field: problem}, keeping the order of the problems.
type Fields []connection.FieldError

// MarshalJSON writes the problems as an object in their order.
func (f Fields) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range f {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(p.Field)
		v, _ := json.Marshal(p.Problem)
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads an object {field: problem} in its order.
func (f *Fields) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("fields: expected a JSON object")
	}
	var out Fields
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("fields: %w", err)
		}
		k, _ := t.(string)
		var v string
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("fields.%s: %w", k, err)
		}
		out = append(out, connection.FieldError{Field: k, Problem: v})
	}
	*f = out
	return nil
}

// Map returns the problems as a map from field to problem.
func (f Fields) Map() map[string]string {
	m := make(map[string]string, len(f))
	for _, p := range f {
		m[p.Field] = p.Problem
	}
	return m
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
	var denied *egress.DeniedError
	switch {
	case errors.As(err, &ae):
		return ae.status, ErrorBody{Code: ae.code, Message: ae.message, Fields: ae.fields}
	case errors.As(err, &ve):
		return http.StatusBadRequest, ErrorBody{Code: CodeValidationFailed, Message: validationMessage(ve),
			Fields: Fields(ve.Problems)}
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
	case errors.Is(err, store.ErrFull):
		// The message names the store and the full disk; no secret.
		return http.StatusServiceUnavailable, ErrorBody{Code: CodeUnavailable, Message: err.Error()}
	case errors.Is(err, app.ErrInvalid):
		return http.StatusUnprocessableEntity, ErrorBody{Code: CodeInvalid, Message: err.Error()}
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
	case errors.As(err, &pge):
		return http.StatusBadGateway, ErrorBody{Code: CodeDatabaseError, Message: err.Error(),
			DatabaseError: databaseError(pge)}
	case errors.As(err, &ce):
		// pgconn's connect errors name user, host and database, never the
		// password.
		return http.StatusBadGateway, ErrorBody{Code: CodeDatabaseError, Message: err.Error()}
	}
	return http.StatusInternalServerError, ErrorBody{Code: CodeInternal}
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
