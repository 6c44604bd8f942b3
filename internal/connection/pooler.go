package connection

import (
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Pooler says what kind of connection pooler (PgBouncer, Lakebase's and
// many managed services' poolers) sits in front of the database, if any.
type Pooler string

// Poolers.
const (
	// PoolerNone: clients talk to PostgreSQL itself (the default).
	PoolerNone Pooler = "none"
	// PoolerTransaction: a pooler in transaction mode, which hands each
	// transaction to any server connection of its pool. Named prepared
	// statements and session settings do not survive from one
	// transaction to the next, so pgrelay uses none: its queries go out
	// with the extended protocol's unnamed statement in one round trip
	// (pgx QueryExecModeExec), and a SQL step's search_path is set in the
	// same message as the step.
	PoolerTransaction Pooler = "transaction"
	// PoolerSession: a pooler in session mode, which keeps one server
	// connection per client session: everything works as without a
	// pooler.
	PoolerSession Pooler = "session"
)

// Poolers returns every pooler setting in display order.
func Poolers() []Pooler { return []Pooler{PoolerNone, PoolerTransaction, PoolerSession} }

// Label is the setting's name in the UI.
func (p Pooler) Label() string {
	switch p {
	case PoolerNone, "":
		return "None (PostgreSQL itself)"
	case PoolerTransaction:
		return "Pooler in transaction mode"
	case PoolerSession:
		return "Pooler in session mode"
	}
	return string(p)
}

// EffectivePooler returns the spec's pooler setting, none when unset.
func (s *Spec) EffectivePooler() Pooler {
	if s.Pooler == "" {
		return PoolerNone
	}
	return s.Pooler
}

// TransactionPooled reports whether sessions may move between server
// connections at each transaction (pooler: transaction).
func (s *Spec) TransactionPooled() bool { return s.Pooler == PoolerTransaction }

func validatePooler(p Pooler) error {
	if p == "" || slices.Contains(Poolers(), p) {
		return nil
	}
	return fmt.Errorf("%q is not accepted: use none, transaction (PgBouncer-style pooler in transaction mode) or session", truncate(string(p), 40))
}

// applyPooler sets the pgx query mode for the spec's pooler: without named
// prepared statements (or statement and description caches) behind a
// transaction-mode pooler.
func (s *Spec) applyPooler(cfg *pgx.ConnConfig) {
	if !s.TransactionPooled() {
		return
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	cfg.StatementCacheCapacity = 0
	cfg.DescriptionCacheCapacity = 0
}
