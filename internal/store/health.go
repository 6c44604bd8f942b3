package store

import (
	"context"
	"time"
)

// Check kinds of a ConnectionCheck.
const (
	// CheckTest is a connection test (manual or scheduled).
	CheckTest = "test"
	// CheckRun is a run over the connection that ended.
	CheckRun = "run"
	// CheckUse is another use that succeeded (a query, a grants audit, a
	// proxy started).
	CheckUse = "use"
)

// ConnectionCheck is one entry of a connection's recent history, for its
// health: a test, a run or a use, and how it went.
type ConnectionCheck struct {
	// Kind is CheckTest, CheckRun or CheckUse.
	Kind string    `json:"kind"`
	At   time.Time `json:"at"`
	OK   bool      `json:"ok"`
	// Source says what started it: manual or scheduled (tests), the
	// run's trigger (runs), the use (query, grants, proxy).
	Source string `json:"source,omitempty"`
	// Step is a failed test's failing step, or a run's status.
	Step string `json:"step,omitempty"`
	// Detail is a failed test's error (no secret), or a run's ID.
	Detail     string `json:"detail,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// HealthStore keeps each connection's recent tests, runs and uses. They
// go with their connection when it is deleted.
type HealthStore interface {
	// AddConnectionCheck records c for the connection with that ID and
	// keeps only the newest keep entries of its kind; ErrNotFound when the
	// connection is gone.
	AddConnectionCheck(ctx context.Context, connectionID string, c ConnectionCheck, keep int) error
	// ConnectionChecks returns the connection's entries, newest first, at
	// most limit.
	ConnectionChecks(ctx context.Context, connectionID string, limit int) ([]ConnectionCheck, error)
	// RecentChecks returns, by connection ID, the newest perConnection
	// entries of each connection (newest first).
	RecentChecks(ctx context.Context, perConnection int) (map[string][]ConnectionCheck, error)
}
