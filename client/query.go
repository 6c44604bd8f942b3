package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/app"
)

// Query runs sql on the named connection on the server and feeds the
// results to sink (Begin, Row per row, End per statement; NULL is nil).
// The server returns at most its row limit: the rows up to it are fed to
// sink, then Query returns an error wrapping ErrTruncated. A SQL error is
// an *app.QueryError as with a local query.
func (c *Client) Query(ctx context.Context, name, sql string, sink app.ResultSink) error {
	var out api.QueryResponse
	err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("connections", name, "query"),
		in: api.QueryRequest{SQL: sql}, out: &out, timeout: c.queryTimeout, accepted: http.StatusOK})
	var qe *app.QueryError
	if errors.As(err, &qe) {
		qe.Connection = name
	}
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
		return fmt.Errorf("query %s: %w after %d rows: the server returns at most that many; add a LIMIT or narrow the query", name, ErrTruncated, rows)
	}
	return nil
}
