package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/requestid"
)

// ErrForbidden means the token's role does not allow the operation (or a
// session lacked its CSRF token). The error's message names the roles that
// do.
var ErrForbidden = errors.New("forbidden")

// ErrTruncated means the server cut a query result off at its row limit.
// The rows up to the limit were delivered to the sink.
var ErrTruncated = errors.New("query result truncated by the server")

// Error is an error response of the API that is not turned into one of
// package app's errors (or wraps one: see Unwrap).
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is the API's error code (api.Code...).
	Code string
	// Message is the server's message, for people.
	Message string
	// Fields maps request fields to their problems, when there are any.
	Fields map[string]string
	// RequestID names the request in the server's log.
	RequestID string
}

// Error returns the server's message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the app error kind of the code, so that errors.Is works
// as with local use cases: app.ErrNotFound, app.ErrExists,
// app.ErrConflict, app.ErrInvalid, app.ErrUnauthenticated or ErrForbidden.
func (e *Error) Unwrap() error {
	switch e.Code {
	case api.CodeNotFound:
		return app.ErrNotFound
	case api.CodeAlreadyExists:
		return app.ErrExists
	case api.CodeConflict:
		return app.ErrConflict
	case api.CodeInvalid:
		return app.ErrInvalid
	case api.CodeUnauthenticated:
		return app.ErrUnauthenticated
	case api.CodeForbidden, api.CodeCSRF:
		return ErrForbidden
	}
	return nil
}

// responseError turns an error response into an error: an
// *app.ValidationError for validation problems, an *app.QueryError for SQL
// errors, else an *Error.
func (c *Client) responseError(op string, resp *http.Response, data []byte) error {
	var er api.ErrorResponse
	if !isJSON(resp.Header.Get("Content-Type")) || json.Unmarshal(data, &er) != nil || er.Error.Code == "" {
		return c.unexpected(op, resp, data)
	}
	b := er.Error
	if b.RequestID == "" {
		b.RequestID = resp.Header.Get(requestid.Header)
	}
	switch {
	case b.Code == api.CodeValidationFailed && len(b.Fields) > 0:
		return &app.ValidationError{Problems: b.Fields}
	case b.Code == api.CodeDatabaseError && b.DatabaseError != nil:
		d := b.DatabaseError
		return &app.QueryError{Err: &pgconn.PgError{Severity: d.Severity, Code: d.SQLState, Message: d.Message,
			Detail: d.Detail, Hint: d.Hint, Position: d.Position}}
	}
	e := &Error{Status: resp.StatusCode, Code: b.Code, Message: b.Message, RequestID: b.RequestID}
	if len(b.Fields) > 0 {
		e.Fields = b.Fields.Map()
	}
	if e.Message == "" {
		e.Message = fmt.Sprintf("%s: %s", op, b.Code)
	}
	return e
}

// unexpected describes a response that is not an API error: a proxy's
// page, another server, a redirect.
func (c *Client) unexpected(op string, resp *http.Response, data []byte) error {
	e := &Error{Status: resp.StatusCode, Code: "unexpected_response", RequestID: resp.Header.Get(requestid.Header)}
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		e.Message = fmt.Sprintf("%s: the server at %s redirects to %s: use that address as the server URL",
			op, c.base, resp.Header.Get("Location"))
	default:
		snippet := strings.TrimSpace(string(data))
		if len(snippet) > 200 {
			snippet = snippet[:200] + "..."
		}
		if !isPrintable(snippet) {
			snippet = "(binary)"
		}
		e.Message = fmt.Sprintf("%s: unexpected response %s from %s (Content-Type %q): is it a pgrelay server? %s",
			op, resp.Status, c.base, resp.Header.Get("Content-Type"), snippet)
	}
	return e
}

func isPrintable(s string) bool {
	for _, r := range s {
		if r < 0x20 && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}
