package postgres

import (
	"strconv"
	"strings"
)

// The statements that write records are built from each table's column
// list (connectionColumns, tokenColumns, jobColumns, runColumns,
// auditColumns, checkColumns), in the order of the args function beside it
// (connValues.args, tokenArgs, runArgs, auditArgs, checkArgs), so that creating, updating and copying a record share them and
// a new column is added in one place. They are computed once and never
// changed.
var (
	insertConnection = insertSQL("pgrelay_connections", connectionColumns)
	insertToken      = insertSQL("pgrelay_tokens", tokenColumns)
	insertJob        = insertSQL("pgrelay_jobs", jobColumns)
	insertRun        = insertSQL("pgrelay_runs", runColumns)
	insertAudit      = insertSQL("pgrelay_audit", auditColumns)
	insertCheck      = insertSQL("pgrelay_connection_checks", checkColumns)
	// updateRunSet sets every column of runArgs but id and version, with
	// the placeholders of runArgs's positions ($2 for job_name, ...);
	// runVersionArg is the placeholder of the version read.
	updateRunSet  = setSQL(runColumns, "id", "version")
	runVersionArg = "$" + strconv.Itoa(len(columnNames(runColumns)))
)

// jobColumns are the columns of a job's record.
const jobColumns = `name, spec, created_at, updated_at`

// columnNames splits a column list such as "id, name".
func columnNames(cols string) []string {
	names := strings.Split(cols, ",")
	for i, n := range names {
		names[i] = strings.TrimSpace(n)
	}
	return names
}

// insertSQL returns the INSERT of every column in cols ($1, $2, ... in
// their order).
func insertSQL(table, cols string) string {
	names := columnNames(cols)
	ph := make([]string, len(names))
	for i := range names {
		ph[i] = "$" + strconv.Itoa(i+1)
	}
	return `INSERT INTO ` + table + ` (` + cols + `) VALUES (` + strings.Join(ph, ", ") + `)`
}

// setSQL returns "c = $n" for each column in cols but those in skip, n
// being the column's position in cols.
func setSQL(cols string, skip ...string) string {
	var set []string
	for i, c := range columnNames(cols) {
		skipped := false
		for _, s := range skip {
			skipped = skipped || s == c
		}
		if !skipped {
			set = append(set, c+" = $"+strconv.Itoa(i+1))
		}
	}
	return strings.Join(set, ", ")
}
