package api

import (
	"context"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/internal/diagnose"
)

// Event names of the connection test streams (POST /connections/{name}/test
// and POST /connections/test with Accept: text/event-stream).
const (
	// EventStep carries one diagnose.Step as soon as it finishes; steps
	// come in the order they run, skipped ones included.
	EventStep = apiwire.EventStep
	// EventReport carries the whole TestReport after the last step; the
	// server closes the stream after it.
	EventReport = apiwire.EventReport
)

// TestReport is the outcome of a connection test: the body of POST
// /connections/{name}/test and POST /connections/test, and the data of
// their "report" event. A test that fails is still a 200: OK is false and
// the failed step carries the error and the hint.
type TestReport struct {
	// Connection is the tested connection's name; for a draft, the name
	// in the request or else based_on (empty when neither is given).
	Connection string `json:"connection"`
	// Draft is true for the test of an unsaved connection.
	Draft bool `json:"draft,omitempty"`
	diagnose.Report
}

// TestDraftRequest is the body of POST /connections/test: a connection as
// for POST /connections (the name is optional), and optionally the saved
// connection whose key pair, pinned host keys and password the draft uses.
type TestDraftRequest struct {
	ConnectionInput
	// BasedOn names a saved connection (an edit form): the draft uses its
	// SSH key pair and the host keys pinned for the same bastion, and its
	// password when the draft has none (absent or "").
	BasedOn string `json:"based_on,omitempty"`
}

// testFunc runs a test, reporting each step to progress.
type testFunc func(ctx context.Context, progress func(diagnose.Step)) (*diagnose.Report, error)

// testConnection tests a saved connection (see runTest).
func (a *API) testConnection(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	return a.runTest(w, r, TestReport{Connection: name},
		func(ctx context.Context, progress func(diagnose.Step)) (*diagnose.Report, error) {
			return a.cfg.App.TestConnection(ctx, name, progress)
		})
}

// testDraft tests the unsaved connection in the body (see runTest).
func (a *API) testDraft(w http.ResponseWriter, r *http.Request) error {
	var in TestDraftRequest
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	head := TestReport{Connection: in.Name, Draft: true}
	if head.Connection == "" {
		head.Connection = in.BasedOn
	}
	if err := in.checkHops(); err != nil {
		return err
	}
	spec := in.Spec()
	return a.runTest(w, r, head, func(ctx context.Context, progress func(diagnose.Step)) (*diagnose.Report, error) {
		rep, err := a.cfg.App.TestDraft(ctx, spec, in.BasedOn, progress)
		return rep, in.hopFields(err)
	})
}

// runTest runs test and answers with the TestReport, or, when the client
// asks for a stream (Accept: text/event-stream or ?stream=1), with
// server-sent events: a "step" event per step as it finishes, then a
// "report" event, then the end of the stream. The stream starts with the
// first step, so that a request the test cannot start (unknown connection,
// invalid draft) gets an ordinary JSON error response.
func (a *API) runTest(w http.ResponseWriter, r *http.Request, head TestReport, test testFunc) error {
	stream, err := wantsStream(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	if !stream {
		rep, err := test(ctx, nil)
		if err != nil {
			return err
		}
		head.Report = *rep
		return writeJSON(w, http.StatusOK, head)
	}
	var s *sse
	var streamErr error // the client went away
	begin := func() {
		if s == nil {
			s = startStream(w)
		}
	}
	progress := func(st diagnose.Step) {
		if streamErr != nil {
			return
		}
		begin()
		streamErr = s.event(EventStep, "", st)
	}
	rep, err := test(ctx, progress)
	switch {
	case err != nil && s == nil:
		return err
	case err != nil:
		a.streamError(ctx, s, err, "connection test stream failed")
		return nil
	case streamErr != nil:
		return nil
	}
	begin()
	head.Report = *rep
	_ = s.event(EventReport, "", head)
	return nil
}

// wantsStream reports whether the client asks for server-sent events:
// ?stream=1 (or true; 0 or false says no, whatever Accept says), or
// text/event-stream among the Accept header's media types.
func wantsStream(r *http.Request) (bool, error) {
	if s := r.URL.Query().Get("stream"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return false, fieldError(http.StatusBadRequest, CodeValidationFailed, "stream",
				strconv.Quote(s)+" is not accepted: use 1 (stream the steps as server-sent events) or 0")
		}
		return b, nil
	}
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == "text/event-stream" {
				return true, nil
			}
		}
	}
	return false, nil
}
