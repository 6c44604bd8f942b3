package sqlite

import "strings"

// The statements that write records are built from each table's column
// list (connectionColumns, tokenColumns, jobColumns, runColumns,
// auditColumns, checkColumns), in the order of the args function beside it
// (connArgs, tokenArgs, runArgs, auditArgs, checkArgs), so
// that creating, updating and copying a record share them and a new
// column is added in one place. They are computed once and never changed.
var (
	insertConnection = insertSQL("connections", connectionColumns)
	insertToken      = insertSQL("tokens", tokenColumns)
	insertJob        = insertSQL("jobs", jobColumns)
	insertRun        = insertSQL("runs", runColumns)
	insertRunLog     = insertSQL("run_logs", runLogColumns)
	insertAudit      = insertSQL("audit_log", auditColumns)
	insertCheck      = insertSQL("connection_checks", checkColumns)
	// updateRun writes every column of runArgs but id and version, where
	// the version is the one read (optimistic locking); its args are
	// runArgs's without the first and last, then the ID and the version.
	updateRun = `UPDATE runs SET ` + setSQL(runColumns, "id", "version") +
		`, version = version + 1 WHERE id = ? AND version = ?`
)

// jobColumns are the columns of a job's record.
const jobColumns = `name, spec, created_at, updated_at`

// runLogColumns are the columns of a line of a run's log.
const runLogColumns = `run_id, seq, ts, stream, step, text`

// columnNames splits a column list such as "id, name".
func columnNames(cols string) []string {
	names := strings.Split(cols, ",")
	for i, n := range names {
		names[i] = strings.TrimSpace(n)
	}
	return names
}

// insertSQL returns the INSERT of every column in cols.
func insertSQL(table, cols string) string {
	n := len(columnNames(cols))
	return `INSERT INTO ` + table + ` (` + cols + `) VALUES (` + strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + `)`
}

// setSQL returns "c = ?" for each column in cols but those in skip.
func setSQL(cols string, skip ...string) string {
	var set []string
	for _, c := range columnNames(cols) {
		if !contains(skip, c) {
			set = append(set, c+" = ?")
		}
	}
	return strings.Join(set, ", ")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
