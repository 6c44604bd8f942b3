package cli

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/jsonesc"
)

func (r *runner) queryCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "query NAME SQL",
		Short: "Run SQL on a connection and print the rows",
		Long: `Run SQL on a connection and print the rows.

SQL may hold several statements separated by ';': they run in one session, and
each result set is printed in turn. The table format prints each as a table (a
statement without rows, such as CREATE or INSERT, as its command tag); -o csv
prints each with its header line first; -o json prints each as a JSON array of
objects, one key per column (a column name given twice is a key given twice),
so several statements give a stream of arrays (as jq reads it), and statements
without rows print nothing. Booleans, numbers and json/jsonb are JSON values,
NULL is null, everything else a string.`,
		Example: `  pgrelay query wh "select current_user, version()"
  pgrelay query wh "select * from analytics.orders limit 10" -o csv > orders.csv`,
		Args: exactArgs(2, "NAME and SQL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "table", "csv", "json"); err != nil {
				return err
			}
			// As the API refuses it: locally an empty SQL printed nothing
			// and exited 0, against a server it read "invalid request:
			// sql: required" (exit 2).
			if strings.TrimSpace(args[1]) == "" {
				return usagef("SQL is empty: give one or more SQL statements, e.g. pgrelay query %s \"select 1\"", args[0])
			}
			svc, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			bw := bufio.NewWriter(r.out())
			var sink app.ResultSink
			switch output {
			case "csv":
				sink = &csvSink{w: csv.NewWriter(bw)}
			case "json":
				sink = &jsonSink{w: bw}
			default:
				sink = &tableSink{w: bw}
			}
			// Ctrl-C cancels the statement on the server, then exits.
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			qerr := svc.Query(ctx, args[0], args[1], sink)
			if js, ok := sink.(*jsonSink); ok && qerr != nil {
				// A statement that failed after its first rows: close
				// its array, so that stdout stays JSON (the error goes
				// to stderr, the exit code says it failed).
				_ = js.End("")
			}
			if ferr := bw.Flush(); qerr == nil {
				qerr = ferr
			}
			if qerr != nil && ctx.Err() != nil {
				return &exitCodeError{code: 130, msg: "interrupted: the statement was cancelled on the server"}
			}
			return qerr
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, csv or json")
	return cmd
}

// csvSink writes a header line then rows; NULL is an empty field.
type csvSink struct {
	w    *csv.Writer
	rec  []string
	sets int
}

func (s *csvSink) Begin(cols []app.Column) error {
	s.sets++
	s.rec = make([]string, len(cols))
	for i, c := range cols {
		s.rec[i] = c.Name
	}
	return s.w.Write(s.rec)
}

func (s *csvSink) Row(vals [][]byte) error {
	for i, v := range vals {
		s.rec[i] = string(v)
	}
	return s.w.Write(s.rec)
}

func (s *csvSink) End(string) error { s.w.Flush(); return s.w.Error() }

// jsonSink writes each result set as a JSON array of objects, one array per
// line. Booleans, numbers and json/jsonb become JSON values; the rest are
// strings; NULL is null.
type jsonSink struct {
	w     io.Writer
	cols  []app.Column
	names []string
	n     int
	open  bool
}

// PostgreSQL type OIDs rendered as JSON values rather than strings.
const (
	oidBool    = 16
	oidInt8    = 20
	oidInt2    = 21
	oidInt4    = 23
	oidOID     = 26
	oidJSON    = 114
	oidFloat4  = 700
	oidFloat8  = 701
	oidNumeric = 1700
	oidJSONB   = 3802
)

func (s *jsonSink) Begin(cols []app.Column) error {
	s.cols, s.n, s.open = cols, 0, true
	s.names = make([]string, len(cols))
	for i, c := range cols {
		b, _ := json.Marshal(c.Name)
		s.names[i] = string(jsonesc.Controls(b))
	}
	_, err := io.WriteString(s.w, "[")
	return err
}

func (s *jsonSink) Row(vals [][]byte) error {
	var b strings.Builder
	if s.n > 0 {
		b.WriteString(",")
	}
	b.WriteString("\n  {")
	for i, v := range vals {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s.names[i] + ": ")
		b.WriteString(jsonValue(s.cols[i].TypeOID, v))
	}
	b.WriteString("}")
	s.n++
	// Values of type json pass as they are: write their C1 controls
	// escaped as encoding/json does not (see jsonesc.Controls).
	_, err := s.w.Write(jsonesc.Controls([]byte(b.String())))
	return err
}

func jsonValue(oid uint32, v []byte) string {
	if v == nil {
		return "null"
	}
	switch oid {
	case oidBool:
		if string(v) == "t" {
			return "true"
		}
		return "false"
	case oidInt2, oidInt4, oidInt8, oidOID:
		return string(v)
	case oidFloat4, oidFloat8, oidNumeric:
		if json.Valid(v) {
			return string(v) // NaN and Infinity are not valid JSON numbers
		}
	case oidJSON, oidJSONB:
		if json.Valid(v) {
			return string(v)
		}
	}
	b, _ := json.Marshal(string(v))
	return string(b)
}

func (s *jsonSink) End(string) error {
	if !s.open {
		return nil
	}
	s.open = false
	end := "]\n"
	if s.n > 0 {
		end = "\n]\n"
	}
	_, err := io.WriteString(s.w, end)
	return err
}

// cellText is a value or column name as a table cell shows it: on one
// line (its line ends written \n, or \r\n), with control characters
// written out (see showControls).
func cellText(s string) string {
	s = strings.ReplaceAll(showControls(s), "\r\n", `\r\n`)
	return strings.ReplaceAll(s, "\n", `\n`)
}

// tableSink prints psql-like aligned tables with a row count, and the
// command tag of statements without rows.
type tableSink struct {
	w    io.Writer
	cols []app.Column
	rows [][]string
	open bool
}

func (s *tableSink) Begin(cols []app.Column) error {
	s.cols, s.rows, s.open = cols, nil, true
	return nil
}

func (s *tableSink) Row(vals [][]byte) error {
	row := make([]string, len(vals))
	for i, v := range vals {
		row[i] = cellText(string(v))
	}
	s.rows = append(s.rows, row)
	return nil
}

func (s *tableSink) End(tag string) error {
	if !s.open {
		_, err := fmt.Fprintln(s.w, tag)
		return err
	}
	s.open = false
	widths := make([]int, len(s.cols))
	for i, c := range s.cols {
		widths[i] = utf8.RuneCountInString(cellText(c.Name))
	}
	for _, r := range s.rows {
		for i, v := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(v))
		}
	}
	line := func(cells []string) string {
		parts := make([]string, len(cells))
		for i, c := range cells {
			parts[i] = c + strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
		}
		return strings.TrimRight(" "+strings.Join(parts, " | "), " ")
	}
	names := make([]string, len(s.cols))
	seps := make([]string, len(s.cols))
	for i, c := range s.cols {
		names[i] = cellText(c.Name)
		seps[i] = strings.Repeat("-", widths[i]+2)
	}
	var b strings.Builder
	b.WriteString(line(names) + "\n")
	b.WriteString(strings.Join(seps, "+") + "\n")
	for _, r := range s.rows {
		b.WriteString(line(r) + "\n")
	}
	if len(s.rows) == 1 {
		b.WriteString("(1 row)\n")
	} else {
		fmt.Fprintf(&b, "(%d rows)\n", len(s.rows))
	}
	s.rows = nil
	_, err := io.WriteString(s.w, b.String())
	return err
}
