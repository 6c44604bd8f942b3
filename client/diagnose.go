package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/pgrelay/pgrelay/apiwire"
)

// TestConnection tests a saved connection on the server hop by hop and
// reports each step to progress (when not nil) as soon as the server has
// run it: it reads the test's event stream. The error is for a test that
// cannot start (ErrNotFound, ...); a test that fails is a report whose OK
// is false.
func (c *Client) TestConnection(ctx context.Context, name string, progress func(apiwire.TestStep)) (*apiwire.Report, error) {
	return c.streamTest(ctx, c.endpoint("connections", name, "test"), nil, progress)
}

// TestDraft tests an unsaved connection on the server, such as a form
// before it is saved, with progress as for TestConnection. With basedOn
// naming a saved connection, the draft uses that connection's key pair and
// pinned host keys, and its saved password when spec has none.
func (c *Client) TestDraft(ctx context.Context, in apiwire.ConnectionInput, basedOn string, progress func(apiwire.TestStep)) (*apiwire.Report, error) {
	req := apiwire.TestDraftRequest{ConnectionInput: in, BasedOn: basedOn}
	return c.streamTest(ctx, c.endpoint("connections", "test"), req, progress)
}

// streamTest posts a test request (body in, or none) asking for the event
// stream, and feeds each step to progress until the report arrives.
func (c *Client) streamTest(ctx context.Context, u string, in any, progress func(apiwire.TestStep)) (*apiwire.Report, error) {
	op := http.MethodPost + " " + strings.TrimPrefix(u, c.base.String())
	if c.queryTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.queryTimeout)
		defer cancel()
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("%s: encode request: %w", op, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "text/event-stream, application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s on pgrelay server %s: %w", op, c.base.Host, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, c.responseError(op, resp, data)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch mt {
	case "application/json":
		// A server (or proxy) that answers without streaming.
		var tr apiwire.TestReport
		if err := json.NewDecoder(io.LimitReader(resp.Body, maxEventBytes)).Decode(&tr); err != nil {
			return nil, fmt.Errorf("%s: decode response: %w", op, err)
		}
		return &tr.Report, nil
	case "text/event-stream":
	default:
		return nil, c.unexpected(op, resp, nil)
	}
	var rep *apiwire.Report
	var failed error // an error of the stream's content, complete with op
	fail := func(err error) (bool, error) {
		failed = err
		return false, err
	}
	err = readEvents(resp.Body, nil, func(name string, data []byte) (bool, error) {
		switch name {
		case apiwire.EventStep:
			var st apiwire.TestStep
			if err := json.Unmarshal(data, &st); err != nil {
				return fail(fmt.Errorf("%s: decode step event: %w", op, err))
			}
			if progress != nil {
				progress(st)
			}
		case apiwire.EventReport:
			var tr apiwire.TestReport
			if err := json.Unmarshal(data, &tr); err != nil {
				return fail(fmt.Errorf("%s: decode report event: %w", op, err))
			}
			rep = &tr.Report
			return true, nil
		case apiwire.EventError:
			return fail(streamError(op, data))
		}
		return false, nil
	})
	switch {
	case rep != nil:
		return rep, nil
	case failed != nil:
		return nil, failed
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%s: %w", op, ctx.Err())
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("%s: the event stream ended before the test did", op)
	}
	return nil, fmt.Errorf("%s: %w", op, err)
}

// Grants audits, on the server, the privileges a dbt run needs on the
// named connection's database for the connection's user (or req.Role),
// and returns the checks and the statements that grant what is missing.
func (c *Client) Grants(ctx context.Context, name string, req apiwire.GrantsRequest) (*apiwire.GrantsResponse, error) {
	var out apiwire.GrantsResponse
	if err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("connections", name, "grants"), in: req,
		out: &out, timeout: c.queryTimeout, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &out, nil
}
