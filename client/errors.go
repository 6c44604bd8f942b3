package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/pgrelay/pgrelay/apiwire"
)

// Kinds of error responses, for errors.Is on an *Error.
var (
	// ErrNotFound: the named record does not exist (not_found).
	ErrNotFound = errors.New("not found")
	// ErrExists: a record with that name exists (already_exists).
	ErrExists = errors.New("already exists")
	// ErrConflict: the record changed concurrently (conflict).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request is not acceptable (invalid).
	ErrInvalid = errors.New("invalid request")
	// ErrUnauthenticated: the token is unknown, expired or revoked
	// (unauthenticated).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden means the token's role does not allow the operation
	// (or a session lacked its CSRF token). The error's message names the
	// roles that do.
	ErrForbidden = errors.New("forbidden")
	// ErrTooLarge: the request body is over the server's limit
	// (too_large).
	ErrTooLarge = errors.New("request too large")
	// ErrNetworkDenied: the server's network policy refuses the address
	// (network_denied).
	ErrNetworkDenied = errors.New("network address denied")
	// ErrTimeout: the server stopped the operation at its time limit
	// (timeout).
	ErrTimeout = errors.New("timed out")
	// ErrUnavailable: the server cannot do it now (unavailable: its store
	// is full, or a secret no longer opens).
	ErrUnavailable = errors.New("unavailable")
)

// ErrTruncated means the server cut a query result off at its row limit.
// The rows up to the limit were delivered to the sink.
var ErrTruncated = errors.New("query result truncated by the server")

// ValidationError is a validation_failed response: every problem of the
// request, by field (a JSON path such as "ssh_tunnel.port").
type ValidationError struct {
	// Message is the server's message, for people.
	Message string
	// Fields are the problems, in the server's order.
	Fields apiwire.Fields
	// RequestID names the request in the server's log.
	RequestID string
}

// Error returns the server's message.
func (e *ValidationError) Error() string { return e.Message }

// QueryError is a database_error response: the database server's error.
type QueryError struct {
	// Message is the server's message, for people.
	Message string
	// Err is the database's error (SQLSTATE, message, detail, hint).
	Err apiwire.DatabaseError
	// Status is the HTTP status code.
	Status int
	// RequestID names the request in the server's log.
	RequestID string
}

// Error returns the server's message.
func (e *QueryError) Error() string { return e.Message }

// Error is an error response of the API other than a ValidationError or
// a QueryError.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is the API's error code (apiwire.Code...).
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

// Unwrap returns the kind of the code, for errors.Is: ErrNotFound,
// ErrExists, ErrConflict, ErrInvalid, ErrUnauthenticated, ErrForbidden,
// ErrTooLarge, ErrNetworkDenied, ErrTimeout or ErrUnavailable.
func (e *Error) Unwrap() error {
	switch e.Code {
	case apiwire.CodeNotFound:
		return ErrNotFound
	case apiwire.CodeAlreadyExists:
		return ErrExists
	case apiwire.CodeConflict:
		return ErrConflict
	case apiwire.CodeInvalid:
		return ErrInvalid
	case apiwire.CodeUnauthenticated:
		return ErrUnauthenticated
	case apiwire.CodeForbidden, apiwire.CodeCSRF:
		return ErrForbidden
	case apiwire.CodeTooLarge:
		return ErrTooLarge
	case apiwire.CodeNetworkDenied:
		return ErrNetworkDenied
	case apiwire.CodeTimeout:
		return ErrTimeout
	case apiwire.CodeUnavailable:
		return ErrUnavailable
	}
	return nil
}

// responseError turns an error response into an error: a
// *ValidationError for validation problems, a *QueryError for SQL errors,
// else an *Error.
func (c *Client) responseError(op string, resp *http.Response, data []byte) error {
	var er apiwire.ErrorResponse
	if !isJSON(resp.Header.Get("Content-Type")) || json.Unmarshal(data, &er) != nil || er.Error.Code == "" {
		return c.unexpected(op, resp, data)
	}
	b := er.Error
	if b.RequestID == "" {
		b.RequestID = resp.Header.Get(apiwire.RequestIDHeader)
	}
	switch {
	case b.Code == apiwire.CodeValidationFailed && len(b.Fields) > 0:
		return &ValidationError{Message: b.Message, Fields: b.Fields, RequestID: b.RequestID}
	case b.Code == apiwire.CodeDatabaseError && b.DatabaseError != nil:
		return &QueryError{Message: b.Message, Err: *b.DatabaseError, Status: resp.StatusCode, RequestID: b.RequestID}
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
	e := &Error{Status: resp.StatusCode, Code: "unexpected_response", RequestID: resp.Header.Get(apiwire.RequestIDHeader)}
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
