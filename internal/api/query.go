package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/internal/app"
)

// QueryRequest is the body of POST /connections/{name}/query.
type QueryRequest = apiwire.QueryRequest

// QueryResponse is the result of a query: one ResultSet per statement.
type QueryResponse struct {
	Results []ResultSet `json:"results"`
	// Truncated is true when the server stopped reading rows at its limit
	// (see ResultSet.Truncated); the statements after that one did not
	// run to completion.
	Truncated bool `json:"truncated"`
}

// ResultSet is the result of one statement. A statement without a result
// set (e.g. CREATE TABLE) has no columns and no rows, only its command tag.
type ResultSet struct {
	Columns []app.Column `json:"columns"`
	// Rows hold values in PostgreSQL's text format; null is SQL NULL.
	Rows [][]*string `json:"rows"`
	// CommandTag is e.g. "SELECT 3"; empty when truncated.
	CommandTag string `json:"command_tag"`
	// Truncated is true when rows were left out after the row limit.
	Truncated bool `json:"truncated,omitempty"`
}

// errTruncated stops a query at the row limit.
var errTruncated = errors.New("query result truncated")

// resultSink collects results up to a row and byte limit.
type resultSink struct {
	maxRows  int
	maxBytes int64
	cancel   context.CancelFunc

	rows      int
	bytes     int64
	results   []ResultSet
	open      bool // the last result set is receiving rows
	truncated bool
}

func (s *resultSink) Begin(cols []app.Column) error {
	s.results = append(s.results, ResultSet{Columns: append([]app.Column(nil), cols...), Rows: [][]*string{}})
	s.open = true
	return nil
}

func (s *resultSink) Row(values [][]byte) error {
	if s.rows >= s.maxRows || s.bytes >= s.maxBytes {
		s.truncated = true
		s.results[len(s.results)-1].Truncated = true
		// Stop reading at once: closing the result would otherwise read
		// the remaining rows.
		s.cancel()
		return errTruncated
	}
	row := make([]*string, len(values))
	for i, v := range values {
		if v != nil {
			str := string(v)
			row[i] = &str
			s.bytes += int64(len(v))
		}
	}
	s.rows++
	cur := &s.results[len(s.results)-1]
	cur.Rows = append(cur.Rows, row)
	return nil
}

func (s *resultSink) End(tag string) error {
	if !s.open {
		s.results = append(s.results, ResultSet{Columns: []app.Column{}, Rows: [][]*string{}})
	}
	s.results[len(s.results)-1].CommandTag = tag
	s.open = false
	return nil
}

func (a *API) query(w http.ResponseWriter, r *http.Request) error {
	var in QueryRequest
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if strings.TrimSpace(in.SQL) == "" {
		return fieldError(http.StatusBadRequest, CodeValidationFailed, "sql", "required: one or more SQL statements")
	}
	ctx, cancelTimeout := context.WithTimeout(r.Context(), a.cfg.QueryTimeout)
	defer cancelTimeout()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sink := &resultSink{maxRows: a.cfg.MaxRows, maxBytes: a.cfg.MaxResultBytes, cancel: cancel}
	err := a.cfg.App.Query(ctx, r.PathValue("name"), in.SQL, sink)
	switch {
	case errors.Is(err, errTruncated):
	case err != nil && r.Context().Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &apiError{status: http.StatusGatewayTimeout, code: CodeTimeout,
			message: fmt.Sprintf("the query did not finish within %s and was stopped", a.cfg.QueryTimeout)}
	case err != nil:
		return err
	}
	res := sink.results
	if res == nil {
		res = []ResultSet{}
	}
	return writeJSON(w, http.StatusOK, QueryResponse{Results: res, Truncated: sink.truncated})
}
