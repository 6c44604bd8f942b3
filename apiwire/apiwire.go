// Package apiwire holds the types of pgrelay's REST API as they travel on
// the wire: request and response bodies, the views of connections, jobs,
// runs and tests, event names, error codes and the error body. It imports
// nothing but the standard library, so that the Go client (package client)
// and programs of other modules use the API with a small dependency graph;
// the server (internal/api) shares its envelope types and is checked
// against these by a test.
package apiwire

import (
	"strings"
	"time"
)

// Prefix is the path every API route starts with.
const Prefix = "/api/v1"

// Limits and timings of the server that clients align with.
const (
	// DefaultQueryTimeout bounds a query or a connection test on the
	// server.
	DefaultQueryTimeout = 5 * time.Minute
	// DefaultStreamKeepalive is how often a quiet event stream sends a
	// comment.
	DefaultStreamKeepalive = 15 * time.Second
	// MaxRunsLimit is the largest ?limit= of GET /runs.
	MaxRunsLimit = 1000
	// MaxLogLimit is the largest ?limit= of GET /runs/{id}/log.
	MaxLogLimit = 10_000
)

// RequestIDHeader carries the request ID the server logs a request with.
const RequestIDHeader = "X-Request-Id"

// TokenPrefix starts every API token.
const TokenPrefix = "pgr_"

// LooksLikeToken reports whether s has the shape of an API token: the
// prefix and 43 characters.
func LooksLikeToken(s string) bool {
	return strings.HasPrefix(s, TokenPrefix) && len(s) == len(TokenPrefix)+43
}

// Server-sent event names.
const (
	// EventStep is one finished step of a connection test.
	EventStep = "step"
	// EventReport is a connection test's report (the last event).
	EventReport = "report"
	// EventLog is one line of a run's log.
	EventLog = "log"
	// EventRun is a run whose status changed.
	EventRun = "run"
	// EventEnd is the ended run (the last event).
	EventEnd = "end"
	// EventError is a failure of the stream, with an ErrorResponse.
	EventError = "error"
)

// Duration is a duration written as a string such as "30s" (a number of
// seconds is read too).
type Duration time.Duration
