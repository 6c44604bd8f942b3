package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pgrelay/pgrelay/apiwire"
)

// Limits of FollowRun.
const (
	// followIdle is how long an event stream may stay silent (the server
	// sends a comment every 15 s) before it is dropped and resumed.
	followIdle = 4 * apiwire.DefaultStreamKeepalive
	// followRetries is how many times in a row a dropped stream is
	// resumed without receiving anything.
	followRetries = 5
	// maxEventBytes bounds one server-sent event.
	maxEventBytes = 8 << 20
)

// ApplyJobs creates or updates every job, after the server validated all
// of them: an invalid list changes nothing.
func (c *Client) ApplyJobs(ctx context.Context, js []apiwire.Job) ([]apiwire.ApplyResult, error) {
	in := apiwire.ApplyRequest{Jobs: make([]apiwire.JobInput, len(js))}
	for i, j := range js {
		in.Jobs[i] = apiwire.NewJobInput(j)
	}
	var out apiwire.ApplyResponse
	if err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("jobs", "apply"), in: in, out: &out,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return out.Results, nil
}

// ApplyJobsFile sends a jobs YAML file (`jobs: [...]`) as it is; the
// server parses and validates it. An invalid file changes nothing.
func (c *Client) ApplyJobsFile(ctx context.Context, yaml []byte) ([]apiwire.ApplyResult, error) {
	var out apiwire.ApplyResponse
	if err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("jobs", "apply"), raw: yaml,
		rawType: "application/yaml", out: &out, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return out.Results, nil
}

// CreateJob creates a job; ErrExists when one has that name.
func (c *Client) CreateJob(ctx context.Context, j apiwire.Job) (*apiwire.JobView, error) {
	var v apiwire.JobView
	if err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("jobs"), in: apiwire.NewJobInput(j), out: &v,
		accepted: http.StatusCreated}); err != nil {
		return nil, err
	}
	return &v, nil
}

// PutJob creates or replaces the job named j.Name; created says which.
func (c *Client) PutJob(ctx context.Context, j apiwire.Job) (*apiwire.JobView, bool, error) {
	var v apiwire.JobView
	var created bool
	if err := c.do(ctx, request{method: http.MethodPut, url: c.endpoint("jobs", j.Name), in: apiwire.NewJobInput(j),
		out: &v, accepted: http.StatusOK, created: &created}); err != nil {
		return nil, false, err
	}
	return &v, created, nil
}

// GetJob returns a job.
func (c *Client) GetJob(ctx context.Context, name string) (*apiwire.JobView, error) {
	var v apiwire.JobView
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("jobs", name), out: &v,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &v, nil
}

// ListJobs returns every job, ordered by name.
func (c *Client) ListJobs(ctx context.Context) ([]*apiwire.JobView, error) {
	var l apiwire.JobList
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("jobs"), out: &l,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return l.Jobs, nil
}

// DeleteJob removes a job; its runs stay in the history.
func (c *Client) DeleteJob(ctx context.Context, name string) error {
	return c.do(ctx, request{method: http.MethodDelete, url: c.endpoint("jobs", name),
		accepted: http.StatusNoContent})
}

// RunJob queues a run of the job on the server (its trigger is "api").
func (c *Client) RunJob(ctx context.Context, name string) (*apiwire.Run, error) {
	var r apiwire.Run
	if err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("jobs", name, "runs"), out: &r,
		accepted: http.StatusAccepted}); err != nil {
		return nil, err
	}
	return &r, nil
}

// ListRuns lists runs, newest first. A limit of 0 is the server's default
// (50); more than apiwire.MaxRunsLimit asks for that many. ListRunsPage
// also says where the next page starts.
func (c *Client) ListRuns(ctx context.Context, f apiwire.RunFilter) ([]*apiwire.Run, error) {
	l, err := c.ListRunsPage(ctx, f)
	if err != nil {
		return nil, err
	}
	return l.Runs, nil
}

// ListRunsPage lists a page of runs, newest first, as ListRuns does; the
// list's NextBefore, when set, is the f.Before of the next (older) page.
// A Before that names no run is a *ValidationError of the field "before".
func (c *Client) ListRunsPage(ctx context.Context, f apiwire.RunFilter) (*apiwire.RunList, error) {
	q := url.Values{}
	if f.Job != "" {
		q.Set("job", f.Job)
	}
	if len(f.Statuses) > 0 {
		ss := make([]string, len(f.Statuses))
		for i, s := range f.Statuses {
			ss[i] = string(s)
		}
		q.Set("status", strings.Join(ss, ","))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(min(f.Limit, apiwire.MaxRunsLimit)))
	}
	if f.Before != "" {
		q.Set("before", f.Before)
	}
	u := c.endpoint("runs")
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var l apiwire.RunList
	if err := c.do(ctx, request{method: http.MethodGet, url: u, out: &l, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &l, nil
}

// GetRun returns a run.
func (c *Client) GetRun(ctx context.Context, id string) (*apiwire.Run, error) {
	var r apiwire.Run
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("runs", id), out: &r,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &r, nil
}

// RunLog returns up to limit log lines with a sequence number above
// afterSeq (0 for the server's default of 1000; at most apiwire.MaxLogLimit).
func (c *Client) RunLog(ctx context.Context, id string, afterSeq int64, limit int) ([]apiwire.LogLine, error) {
	q := url.Values{}
	if afterSeq > 0 {
		q.Set("after", strconv.FormatInt(afterSeq, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(min(limit, apiwire.MaxLogLimit)))
	}
	u := c.endpoint("runs", id, "log")
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var l apiwire.RunLog
	if err := c.do(ctx, request{method: http.MethodGet, url: u, out: &l, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return l.Lines, nil
}

// CancelRun cancels a queued or running run. The server records the
// client's token name as who cancelled.
func (c *Client) CancelRun(ctx context.Context, id string) (*apiwire.Run, error) {
	var r apiwire.Run
	if err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("runs", id, "cancel"), out: &r,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &r, nil
}

// FollowRun follows a run through the server's event stream until it
// ends, calling fn (if not nil) with each log line once, in order, and
// returns the ended run. A stream that drops (the server restarted, a
// proxy cut it or answered 502, 503 or 504 meanwhile) is resumed after the
// last line seen; it gives up after several attempts in a row that receive
// nothing. Other error responses (the run does not exist, the token may
// not read it) are returned at once.
func (c *Client) FollowRun(ctx context.Context, id string, fn func(apiwire.LogLine)) (*apiwire.Run, error) {
	var after int64
	failures := 0
	for {
		run, progressed, err := c.followOnce(ctx, id, &after, fn)
		switch {
		case run != nil:
			return run, nil
		case ctx.Err() != nil:
			return nil, ctx.Err()
		}
		var fatal *followFatal
		if errors.As(err, &fatal) {
			return nil, fatal.err
		}
		if progressed {
			failures = 0
		}
		failures++
		if failures > followRetries {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(failures) * 500 * time.Millisecond):
		}
	}
}

// followFatal is an error of FollowRun that resuming does not fix.
type followFatal struct{ err error }

func (e *followFatal) Error() string { return e.err.Error() }
func (e *followFatal) Unwrap() error { return e.err }

// followOnce reads one event stream of the run. It returns the ended run,
// or an error and whether anything was received.
func (c *Client) followOnce(ctx context.Context, id string, after *int64, fn func(apiwire.LogLine)) (*apiwire.Run, bool, error) {
	u := c.endpoint("runs", id, "events")
	op := "GET " + strings.TrimPrefix(u, c.base.String())
	if *after > 0 {
		u += "?after=" + strconv.FormatInt(*after, 10)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A stream that goes silent longer than the server's keepalives is
	// dead (a frozen proxy): drop it and resume.
	idle := time.AfterFunc(followIdle, cancel)
	defer idle.Stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, &followFatal{fmt.Errorf("%s: %w", op, err)}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("%s on pgrelay server %s: %w", op, c.base.Host, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		err := c.responseError(op, resp, data)
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			// A proxy that cannot reach the server (it restarts), or a
			// server that cannot serve now: resume later.
			return nil, false, err
		}
		return nil, false, &followFatal{err}
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return nil, false, &followFatal{c.unexpected(op, resp, nil)}
	}
	progressed := false
	var ended *apiwire.Run
	err = readEvents(resp.Body, func() { idle.Reset(followIdle) }, func(name string, payload []byte) (bool, error) {
		switch name {
		case apiwire.EventLog:
			var l apiwire.LogLine
			if err := json.Unmarshal(payload, &l); err != nil {
				return false, &followFatal{fmt.Errorf("%s: decode log event: %w", op, err)}
			}
			if l.Seq > *after {
				if fn != nil {
					fn(l)
				}
				*after = l.Seq
				progressed = true
			}
		case apiwire.EventRun:
			progressed = true
		case apiwire.EventEnd:
			var r apiwire.Run
			if err := json.Unmarshal(payload, &r); err != nil {
				return false, &followFatal{fmt.Errorf("%s: decode end event: %w", op, err)}
			}
			ended = &r
			return true, nil
		case apiwire.EventError:
			return false, streamError(op, payload)
		}
		return false, nil
	})
	switch {
	case ended != nil:
		return ended, true, nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, progressed, fmt.Errorf("%s: the event stream ended before the run did", op)
	case err != nil:
		var fatal *followFatal
		var apiErr *Error
		if errors.As(err, &fatal) || errors.As(err, &apiErr) {
			return nil, progressed, err
		}
		return nil, progressed, fmt.Errorf("%s: %w", op, err)
	}
	return nil, progressed, fmt.Errorf("%s: the event stream ended before the run did", op)
}

// streamError is the error an "error" event carries.
func streamError(op string, payload []byte) error {
	var er apiwire.ErrorResponse
	if err := json.Unmarshal(payload, &er); err != nil || er.Error.Code == "" {
		return fmt.Errorf("%s: the event stream failed on the server", op)
	}
	return &Error{Status: http.StatusOK, Code: er.Error.Code, Message: er.Error.Message, RequestID: er.Error.RequestID}
}
