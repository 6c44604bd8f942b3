package diagnose

import (
	"fmt"

	"github.com/pgrelay/pgrelay/internal/connection"
)

// poolerSymptom reports whether err is what a pooler in transaction mode
// does to named prepared statements: one prepared on a server connection
// the session no longer has (26000 invalid_sql_statement_name), or one
// of the same name left by another client on the connection it now has
// (42P05 duplicate_prepared_statement).
func poolerSymptom(err error) bool {
	pe := asPgError(err)
	return pe != nil && (pe.Code == "26000" || pe.Code == "42P05")
}

// hintPooler is the hint for the symptom of a transaction-mode pooler.
func (r *runner) hintPooler() string {
	if r.spec.TransactionPooled() {
		return "A prepared statement went missing or was already there although pgrelay uses none behind a transaction-mode pooler: " +
			"the pooler may be in statement mode, or rewrite queries; check its pool_mode."
	}
	return fmt.Sprintf("A named prepared statement went missing or was already there: the signature of a connection pooler in "+
		"transaction mode (PgBouncer, Lakebase's and many managed services' poolers) in front of the database, which gives each "+
		"transaction any server connection of its pool. Tell pgrelay so, and it uses no named prepared statements: %s.",
		r.updateAdvice("pooler", string(connection.PoolerTransaction)))
}
