package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/pgrelay/pgrelay/apiwire"
)

// Query runs sql on the named connection on the server and feeds the
// results to sink (Begin, Row per row, End per statement; NULL is nil).
// The server returns at most its row limit and its limit of bytes of
// values: the rows up to them are fed to sink, then Query returns an error
// wrapping ErrTruncated. A SQL error is
// a *QueryError.
func (c *Client) Query(ctx context.Context, name, sql string, sink ResultSink) error {
	var out apiwire.QueryResponse
	err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("connections", name, "query"),
		in: apiwire.QueryRequest{SQL: sql}, out: &out, timeout: c.queryTimeout, accepted: http.StatusOK})
	if err != nil {
		return err
	}
	var vals [][]byte
	rows := 0
	for _, rs := range out.Results {
		if len(rs.Columns) > 0 {
			if err := sink.Begin(rs.Columns); err != nil {
				return err
			}
			for _, row := range rs.Rows {
				if len(row) != len(rs.Columns) {
					return fmt.Errorf("query %s: the server sent a row of %d values for %d columns", name, len(row), len(rs.Columns))
				}
				vals = vals[:0]
				for _, v := range row {
					if v == nil {
						vals = append(vals, nil)
						continue
					}
					b := make([]byte, len(*v)) // non-nil even when empty: "" is not NULL
					copy(b, *v)
					vals = append(vals, b)
				}
				if err := sink.Row(vals); err != nil {
					return err
				}
				rows++
			}
		}
		// A truncated result set ends too (with no command tag), so that
		// the sink writes out what it got.
		if err := sink.End(rs.CommandTag); err != nil {
			return err
		}
		if rs.Truncated {
			break
		}
	}
	if out.Truncated {
		return fmt.Errorf("query %s: %w after %d rows, at its limit of rows or of bytes of values in one response; "+
			"add a LIMIT or select fewer or narrower columns", name, ErrTruncated, rows)
	}
	return nil
}

// ResultSink receives a query's results as they are read: for each
// statement with rows, Begin with its columns, Row per row (values in
// PostgreSQL's text format, nil for NULL), then End with the command tag.
type ResultSink interface {
	Begin(cols []apiwire.Column) error
	Row(vals [][]byte) error
	End(commandTag string) error
}
