package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/requestid"
)

// Defaults of the run event stream.
const (
	// DefaultStreamPoll is how often a run event stream reads the store
	// for new log lines and changes of the run. Polling the store (rather
	// than listening to this process's queue) follows runs worked by any
	// process sharing the store.
	DefaultStreamPoll = 300 * time.Millisecond
	// DefaultStreamKeepalive is how often a quiet stream sends a comment,
	// so that proxies keep the connection open.
	DefaultStreamKeepalive = apiwire.DefaultStreamKeepalive
	// DefaultStreamAuthCheck is how often a run event stream checks that
	// its token is not revoked and its session (if any) not ended; the
	// stream ends at the first check after either.
	DefaultStreamAuthCheck = 2 * time.Second
	// DefaultMaxStreamsPerToken is how many run event streams one token
	// (with its web sessions) may have open at once.
	DefaultMaxStreamsPerToken = 8
	// StreamWriteTimeout bounds each write of an event stream: a client
	// that reads nothing for this long is cut off. Streams have no
	// deadline for the whole response.
	StreamWriteTimeout = 30 * time.Second
)

// Event names of GET /runs/{id}/events.
const (
	// EventLog carries one jobs.LogLine; its SSE id is the line's Seq.
	EventLog = apiwire.EventLog
	// EventRun carries the jobs.Run, first at once and then whenever its
	// status, reason, steps or worker change.
	EventRun = apiwire.EventRun
	// EventEnd carries the ended jobs.Run after its last log line; the
	// server closes the stream after it.
	EventEnd = apiwire.EventEnd
	// EventError carries an ErrorBody when the stream fails on the
	// server (e.g. the store is unreachable); the stream closes after it
	// and the client may reconnect.
	EventError = apiwire.EventError
)

// sse writes server-sent events and flushes each one.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// event writes one event with its JSON data; id is left out when empty.
func (s *sse) event(name, id string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("encode %s event: %w", name, err)
	}
	var buf bytes.Buffer
	buf.WriteString("event: " + name + "\n")
	if id != "" {
		buf.WriteString("id: " + id + "\n")
	}
	// JSON has no raw newlines: the data is one line.
	buf.WriteString("data: ")
	buf.Write(b)
	buf.WriteString("\n\n")
	return s.write(buf.Bytes())
}

// comment writes an SSE comment (ignored by clients).
func (s *sse) comment(text string) error { return s.write([]byte(": " + text + "\n\n")) }

// errStreamClosed means a write to the stream failed: the client went
// away.
var errStreamClosed = errors.New("event stream closed")

func (s *sse) write(b []byte) error {
	// Each write gets its own deadline, which replaces the server's
	// deadline for the whole response.
	if err := s.rc.SetWriteDeadline(time.Now().Add(StreamWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("%w: set write deadline: %v", errStreamClosed, err)
	}
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("%w: %v", errStreamClosed, err)
	}
	if err := s.rc.Flush(); err != nil {
		return fmt.Errorf("%w: flush: %v", errStreamClosed, err)
	}
	return nil
}

// runEvents streams a run as server-sent events: "log" for each log line
// (after ?after= or the Last-Event-ID header), "run" when the run changes,
// and "end" with the ended run, after which the stream closes. It polls
// the store, so it follows runs worked by any process, and it stops when
// the client goes away or the server shuts down.
func (a *API) runEvents(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	id := r.PathValue("id")
	after, err := intParam(r, "after", 0, 0, 1<<62)
	if err != nil {
		return err
	}
	if last := strings.TrimSpace(r.Header.Get("Last-Event-ID")); last != "" && r.URL.Query().Get("after") == "" {
		// A reconnecting EventSource resumes after the last line it saw.
		if v, err := strconv.ParseInt(last, 10, 64); err == nil && v >= 0 {
			after = v
		}
	}
	run, err := a.cfg.App.GetRun(ctx, id)
	if err != nil {
		return err
	}
	p := auth.PrincipalFrom(ctx)
	if p == nil {
		return app.ErrUnauthenticated
	}
	if !a.streams.acquire(p.TokenID, a.cfg.MaxStreamsPerToken) {
		a.log.WarnContext(ctx, "run event stream refused: too many streams", "token_id", p.TokenID,
			"token_name", p.Name, "limit", a.cfg.MaxStreamsPerToken)
		return &apiError{status: http.StatusTooManyRequests, code: CodeTooManyStreams,
			message: fmt.Sprintf("too many event streams: token %q already has %d open, the most this server allows per token (pgrelay serve --max-streams-per-token); close one (another `run logs --follow` or run page) and retry",
				p.Name, a.cfg.MaxStreamsPerToken)}
	}
	defer a.streams.release(p.TokenID)
	s := startStream(w)
	if err := s.write([]byte("retry: 1000\n\n")); err != nil {
		return nil // the client went away
	}
	if err := a.streamRun(ctx, s, p, run, after); err != nil && !errors.Is(err, errStreamClosed) {
		a.streamError(ctx, s, err, "run event stream failed", "run_id", id)
	}
	return nil
}

// startStream sends the headers of an event stream and returns the
// stream.
func startStream(w http.ResponseWriter) *sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	return &sse{w: w, rc: http.NewResponseController(w)}
}

// streamError tells err in a stream whose headers are sent, as an "error"
// event carrying an ErrorResponse, unless the client went away. Server-side
// failures are logged with msg and attrs; unknown errors get a generic
// message naming the request ID.
func (a *API) streamError(ctx context.Context, s *sse, err error, msg string, attrs ...any) {
	if ctx.Err() != nil {
		return
	}
	status, body := classify(err)
	if status >= http.StatusInternalServerError {
		a.log.ErrorContext(ctx, msg, append(attrs, "error", err)...)
		switch {
		case body.Code == CodeInternal:
			body.Message = "internal error; see the server log for request " + requestid.From(ctx)
		case body.Message == storeUnavailable(""):
			body.Message = storeUnavailable(requestid.From(ctx))
		}
	}
	body.RequestID = requestid.From(ctx)
	_ = s.event(EventError, "", ErrorResponse{Error: body})
}

// streamRun sends the run and its log until the run ends (nil), the
// client goes away (nil or errStreamClosed), the server shuts down (nil),
// the principal p loses its right to read (its token revoked, its session
// ended: errStreamRevoked) or reading the store fails.
func (a *API) streamRun(ctx context.Context, s *sse, p *auth.Principal, run *jobs.Run, after int64) error {
	poll := time.NewTicker(a.cfg.StreamPoll)
	defer poll.Stop()
	keepalive := time.NewTicker(a.cfg.StreamKeepalive)
	defer keepalive.Stop()
	authCheck := time.NewTicker(a.cfg.StreamAuthCheck)
	defer authCheck.Stop()
	if err := s.event(EventRun, "", run); err != nil {
		return err
	}
	last := runSignature(run)
	for {
		var err error
		if after, err = a.streamLog(ctx, s, run.ID, after); err != nil {
			return err
		}
		if run.Status.Terminal() {
			// Lines written after the status changed (the reaper logs
			// the lost worker after it fails the run): wait one poll.
			select {
			case <-ctx.Done():
				return nil
			case <-a.cfg.Done:
				return nil
			case <-poll.C:
			}
			if _, err = a.streamLog(ctx, s, run.ID, after); err != nil {
				return err
			}
			return s.event(EventEnd, "", run)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.cfg.Done:
			return nil
		case <-keepalive.C:
			if err := s.comment("keepalive"); err != nil {
				return err
			}
			continue
		case <-authCheck.C:
			if err := a.recheck(ctx, p); err != nil {
				return err
			}
			continue
		case <-poll.C:
		}
		cur, err := a.cfg.App.GetRun(ctx, run.ID)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		run = cur
		if sig := runSignature(run); sig != last && !run.Status.Terminal() {
			last = sig
			if err := s.event(EventRun, "", run); err != nil {
				return err
			}
		}
	}
}

// errStreamRevoked ends a stream whose token was revoked or whose session
// ended while it ran.
var errStreamRevoked = &apiError{status: http.StatusUnauthorized, code: CodeUnauthenticated,
	message: "unauthenticated: the token of this stream was revoked or its session ended, so the stream was closed; sign in again or use another token"}

// recheck checks that p may still read: errStreamRevoked when its token is
// revoked or its session ended, another error when the store cannot say.
func (a *API) recheck(ctx context.Context, p *auth.Principal) error {
	_, err := a.cfg.App.Reauthenticate(ctx, p)
	switch {
	case errors.Is(err, app.ErrUnauthenticated):
		a.log.InfoContext(ctx, "run event stream closed: token revoked or session ended",
			"token_id", p.TokenID, "token_name", p.Name)
		return errStreamRevoked
	case err != nil && ctx.Err() != nil:
		return nil
	}
	return err
}

// streamCounter counts open event streams per token ID.
type streamCounter struct {
	mu   sync.Mutex
	open map[string]int
}

// acquire counts one more stream of tokenID unless it has max open, and
// reports whether it did.
func (c *streamCounter) acquire(tokenID string, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[tokenID] >= limit {
		return false
	}
	c.open[tokenID]++
	return true
}

// release counts one stream of tokenID less.
func (c *streamCounter) release(tokenID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[tokenID]--; c.open[tokenID] <= 0 {
		delete(c.open, tokenID)
	}
}

// streamLog sends the run's log lines after seq and returns the last
// sequence number sent.
func (a *API) streamLog(ctx context.Context, s *sse, id string, after int64) (int64, error) {
	for {
		lines, err := a.cfg.App.RunLog(ctx, id, after, DefaultLogLimit)
		if err != nil {
			if ctx.Err() != nil {
				return after, nil
			}
			return after, err
		}
		for _, l := range lines {
			if err := s.event(EventLog, strconv.FormatInt(l.Seq, 10), l); err != nil {
				return after, err
			}
			after = l.Seq
		}
		if len(lines) < DefaultLogLimit {
			return after, nil
		}
	}
}

// runSignature is what a "run" event reports changes of: everything but
// the heartbeat, which changes every few seconds without news.
func runSignature(r *jobs.Run) string {
	c := *r
	c.HeartbeatAt = nil
	b, _ := json.Marshal(&c)
	return string(b)
}
