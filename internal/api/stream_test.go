package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// queuedRun saves a queued run that nothing works, so that its event
// stream stays open until something else ends it.
func queuedRun(t *testing.T, srv *apitest.Server, id string) {
	t.Helper()
	job := jobs.Job{Name: "idle", Connection: "db", Steps: []jobs.Step{{SQL: "select 1"}}}
	r := &jobs.Run{ID: id, JobName: job.Name, Job: job, Trigger: jobs.API, Status: jobs.Queued, QueuedAt: time.Now().UTC()}
	if err := srv.Store.CreateRun(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

// openStream opens the run's event stream with mod adding credentials; the
// stream closes when the test ends.
func openStream(t *testing.T, srv *apitest.Server, runID string, mod func(*http.Request)) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+api.Prefix+"/runs/"+runID+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	mod(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp
}

// nextEvent reads the stream up to its next event (comments skipped) and
// returns its name and data; "" when the stream ended.
func nextEvent(t *testing.T, sc *bufio.Scanner) (name, data string) {
	t.Helper()
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" && name != "":
			return name, data
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
	return "", ""
}

// TestRunEventStreamEndsWhenCredentialsEnd: a run event stream that is
// open when its token is revoked, or its web session ends, sends an
// "unauthenticated" error event and closes within the check interval,
// although the run goes on. The streams outlive the server's write
// timeout for responses, which streams are exempt from.
func TestRunEventStreamEndsWhenCredentialsEnd(t *testing.T) {
	t.Parallel()
	const writeTimeout = 300 * time.Millisecond
	srv := apitest.Start(t, apitest.Options{StreamAuthCheck: 200 * time.Millisecond,
		StreamKeepalive: 50 * time.Millisecond, WriteTimeout: writeTimeout})
	queuedRun(t, srv, "run-idle")
	admin := srv.Client(t, srv.AdminToken)

	viewer := srv.Token(t, "stream-viewer", auth.Viewer)
	editor := srv.Token(t, "stream-editor", auth.Editor)
	cookie, _ := srv.Session(t, editor.ID)
	cases := []struct {
		name string
		mod  func(*http.Request)
		end  func()
	}{
		{"revoked token", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+viewer.Token) }, func() {
			if _, err := admin.RevokeToken(bg, viewer.ID); err != nil {
				t.Fatal(err)
			}
		}},
		{"ended session", func(r *http.Request) { r.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: cookie}) }, func() {
			id, err := srv.Sessions.Verify(cookie)
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.App.EndSession(bg, id); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		resp := openStream(t, srv, "run-idle", c.mod)
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s: stream before the end: %d %s", c.name, resp.StatusCode, b)
		}
		sc := bufio.NewScanner(resp.Body)
		opened := time.Now()
		if name, _ := nextEvent(t, sc); name != api.EventRun {
			t.Fatalf("%s: first event %q, want run", c.name, name)
		}
		// Keepalives keep coming past the write timeout.
		for time.Since(opened) < 2*writeTimeout {
			if !sc.Scan() {
				t.Fatalf("%s: the stream ended %v after it opened, before its credentials did (write timeout %v)",
					c.name, time.Since(opened), writeTimeout)
			}
		}
		c.end()
		ended := make(chan [2]string, 1)
		go func() {
			name, data := nextEvent(t, sc)
			for name != "" && name != api.EventError {
				name, data = nextEvent(t, sc)
			}
			ended <- [2]string{name, data}
		}()
		select {
		case ev := <-ended:
			var er api.ErrorResponse
			if ev[0] != api.EventError || json.Unmarshal([]byte(ev[1]), &er) != nil || er.Error.Code != api.CodeUnauthenticated ||
				!strings.Contains(er.Error.Message, "revoked or its session ended") {
				t.Fatalf("%s: the stream ended with %q %s, want an unauthenticated error event", c.name, ev[0], ev[1])
			}
			if name, _ := nextEvent(t, sc); name != "" {
				t.Fatalf("%s: the stream goes on after the error (%q)", c.name, name)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the stream still runs 10s after its credentials ended", c.name)
		}
		// A new stream with the same credentials is refused outright.
		if resp := openStream(t, srv, "run-idle", c.mod); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s: a new stream: %d, want 401", c.name, resp.StatusCode)
		}
	}
}

// TestRunEventStreamsPerTokenAreCapped: a token gets at most
// DefaultMaxStreamsPerToken run event streams at once; the next one is
// refused with 429 and a JSON error that says what to do, other tokens are
// not affected, and closing a stream frees its place.
func TestRunEventStreamsPerTokenAreCapped(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	queuedRun(t, srv, "run-capped")
	a := srv.Token(t, "streams-a", auth.Viewer)
	b := srv.Token(t, "streams-b", auth.Viewer)
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	var open []*http.Response
	for i := range api.DefaultMaxStreamsPerToken {
		resp := openStream(t, srv, "run-capped", bearer(a.Token))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d of token a: %d", i+1, resp.StatusCode)
		}
		open = append(open, resp)
	}
	// A cookie session of the same token counts against the same cap.
	cookie, _ := srv.Session(t, a.ID)
	for _, mod := range []func(*http.Request){bearer(a.Token), func(r *http.Request) {
		r.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: cookie})
	}} {
		resp := openStream(t, srv, "run-capped", mod)
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("stream %d of token a: 200, want 429", api.DefaultMaxStreamsPerToken+1)
		}
		body, _ := io.ReadAll(resp.Body)
		var er api.ErrorResponse
		if resp.StatusCode != http.StatusTooManyRequests || json.Unmarshal(body, &er) != nil ||
			er.Error.Code != api.CodeTooManyStreams || !strings.Contains(er.Error.Message, fmt.Sprintf(`token "streams-a" already has %d open`, api.DefaultMaxStreamsPerToken)) ||
			!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("stream %d of token a: %d %s, want 429 too_many_streams", api.DefaultMaxStreamsPerToken+1, resp.StatusCode, body)
		}
	}
	if resp := openStream(t, srv, "run-capped", bearer(b.Token)); resp.StatusCode != http.StatusOK {
		t.Fatalf("a stream of another token: %d, want 200", resp.StatusCode)
	}
	// Closing one frees its place once the server sees it gone.
	_ = open[0].Body.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp := openStream(t, srv, "run-capped", bearer(a.Token))
		if resp.StatusCode == http.StatusOK {
			break
		}
		_ = resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatalf("a stream of token a after closing one: still %d", resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
