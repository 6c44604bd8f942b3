package canary_test

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/remote"
)

// response is a recorded HTTP response.
type response struct {
	status int
	header http.Header
	body   string
}

// location is the response's redirect target.
func (r response) location() string { return r.header.Get("Location") }

// webClient is an HTTP client of one pgrelay server that records every
// response
// (status, headers, body) as evidence. It never follows redirects.
type webClient struct {
	t    *testing.T
	ev   *evidence
	base string
	hc   *http.Client
}

func newWeb(t *testing.T, ev *evidence, base string) *webClient {
	return &webClient{t: t, ev: ev, base: base, hc: &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// req is one HTTP request of the test.
type req struct {
	method, path string
	// body is sent with contentType (default application/json when
	// body is set).
	body, contentType string
	// bearer sets Authorization: Bearer.
	bearer string
	// session sets the session cookie; csrf the X-CSRF-Token header.
	session, csrf string
	// cookies are extra cookies.
	cookies []*http.Cookie
	// header holds extra headers.
	header http.Header
	// allow names canaries the response may show.
	allow []string
	// label describes the request in evidence and failures.
	label string
}

// do sends r and records the response.
func (w *webClient) do(r req) response {
	w.t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequest(r.method, w.base+r.path, body)
	if err != nil {
		w.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	if r.body != "" {
		ct := r.contentType
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	for k, vs := range r.header {
		for _, v := range vs {
			hr.Header.Add(k, v)
		}
	}
	if r.bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	if r.session != "" {
		hr.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: r.session})
	}
	if r.csrf != "" {
		hr.Header.Set(auth.CSRFHeader, r.csrf)
	}
	for _, c := range r.cookies {
		hr.AddCookie(c)
	}
	resp, err := w.hc.Do(hr)
	if err != nil {
		w.t.Fatalf("%s %s (%s): %v", r.method, r.path, r.label, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatalf("%s %s (%s): read body: %v", r.method, r.path, r.label, err)
	}
	out := response{status: resp.StatusCode, header: resp.Header, body: string(b)}
	w.ev.add(fmt.Sprintf("http %s %s%s (%s) -> %d", r.method, w.base, r.path, r.label, resp.StatusCode),
		append(headerBytes(resp.Header), b...), r.allow...)
	return out
}

// headerBytes renders headers as text, for evidence.
func headerBytes(h http.Header) []byte {
	var b bytes.Buffer
	_ = h.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// recordingTransport records every response of a client as evidence.
type recordingTransport struct {
	ev    *evidence
	label string
}

func (rt recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	rt.ev.add(fmt.Sprintf("http %s %s (%s) -> %d", r.Method, r.URL, rt.label, resp.StatusCode),
		append(headerBytes(resp.Header), b...))
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, err
}

// newClient returns an API client of base with token whose responses are
// recorded as evidence.
func newClient(t *testing.T, ev *evidence, base, token, label string) *remote.Client {
	t.Helper()
	c, err := remote.Dial(base, token, client.WithHTTPClient(&http.Client{Transport: recordingTransport{ev: ev, label: label}}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var csrfRE = regexp.MustCompile(`name="` + auth.CSRFField + `" value="([^"]+)"`)

// csrfOf returns the CSRF token of the first form on a page.
func csrfOf(t *testing.T, page response) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page.body)
	if m == nil {
		t.Fatalf("no CSRF field on the page (status %d):\n%.2000s", page.status, page.body)
	}
	return html.UnescapeString(m[1])
}

// cookieOf returns the value of the cookie name set by a response.
func cookieOf(r response, name string) *http.Cookie {
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// signIn signs in to the web UI with token, as a browser does (the
// sign-in form with its nonce cookie and CSRF token), and returns the
// session cookie's value and its CSRF token.
func (w *webClient) signIn(token, label string) (session, csrf string) {
	w.t.Helper()
	page := w.do(req{method: http.MethodGet, path: "/login", label: label + ": sign-in page"})
	nonce := cookieOf(page, "pgrelay_login")
	if nonce == nil {
		w.t.Fatalf("the sign-in page set no nonce cookie: %v", page.header)
	}
	form := url.Values{auth.CSRFField: {csrfOf(w.t, page)}, "token": {token}}
	r := w.do(req{method: http.MethodPost, path: "/login", body: form.Encode(),
		contentType: "application/x-www-form-urlencoded", cookies: []*http.Cookie{nonce}, label: label + ": sign in"})
	c := cookieOf(r, auth.SessionCookie)
	if r.status != http.StatusSeeOther || c == nil || c.Value == "" {
		w.t.Fatalf("sign in (%s): status %d, no session cookie:\n%.2000s", label, r.status, r.body)
	}
	list := w.do(req{method: http.MethodGet, path: "/connections", session: c.Value, label: label + ": connections"})
	if list.status != http.StatusOK {
		w.t.Fatalf("connections page after sign-in (%s): %d", label, list.status)
	}
	return c.Value, csrfOf(w.t, list)
}

// postForm posts a web form with the session's CSRF token.
func (w *webClient) postForm(session, csrf, path string, form url.Values, label string, allow ...string) response {
	w.t.Helper()
	f := url.Values{}
	for k, v := range form {
		f[k] = v
	}
	f.Set(auth.CSRFField, csrf)
	return w.do(req{method: http.MethodPost, path: path, body: f.Encode(), contentType: "application/x-www-form-urlencoded",
		session: session, label: label, allow: allow})
}

// webRoute is one route of the web UI.
type webRoute struct {
	method, pattern string
	// authed routes need a signed-in session.
	authed bool
}

var muxLineRE = regexp.MustCompile(`mux\.Handle(?:Func)?\("(GET|POST|PUT|PATCH|DELETE) ([^"]+)",\s*(.*)$`)

// webRoutes returns the web UI's routes as internal/web/web.go registers
// them, so that a page added to the UI is walked (or fails the walk until
// the test knows how to fill it).
func webRoutes(t *testing.T) []webRoute {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot find this test file")
	}
	src, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "web", "web.go"))
	if err != nil {
		t.Fatalf("read the web UI's routes: %v", err)
	}
	var out []webRoute
	for _, line := range strings.Split(string(src), "\n") {
		m := muxLineRE.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		out = append(out, webRoute{method: m[1], pattern: m[2], authed: strings.Contains(m[3], "u.authed(")})
	}
	if len(out) < 20 {
		t.Fatalf("found only %d web routes in internal/web/web.go; has Register changed shape?", len(out))
	}
	return out
}

// fillWeb fills a web route's path parameters: {name} with conn under
// /connections/ and job under /jobs/, {id} with run, {file} with the
// stylesheet.
func fillWeb(t *testing.T, rt webRoute, conn, job, run string) string {
	t.Helper()
	p := strings.ReplaceAll(rt.pattern, "{$}", "")
	p = strings.ReplaceAll(p, "{file}", "app.css")
	switch {
	case strings.HasPrefix(p, "/connections/"):
		p = strings.ReplaceAll(p, "{name}", url.PathEscape(conn))
	case strings.HasPrefix(p, "/jobs/"):
		p = strings.ReplaceAll(p, "{name}", url.PathEscape(job))
	}
	p = strings.ReplaceAll(p, "{id}", url.PathEscape(run))
	if strings.Contains(p, "{") {
		t.Fatalf("web route %s %s: the walk cannot fill its path parameters; add them to fillWeb", rt.method, rt.pattern)
	}
	return p
}

// apiRoutes returns the REST API's routes, as the server serves them.
func apiRoutes(t *testing.T) []api.Route {
	t.Helper()
	rs := api.New(api.Config{}).Routes()
	if len(rs) < 20 {
		t.Fatalf("only %d API routes", len(rs))
	}
	sort.SliceStable(rs, func(i, j int) bool {
		// Destructive routes last, so that the walk reads first.
		return rs[i].Method == http.MethodGet && rs[j].Method != http.MethodGet
	})
	return rs
}

// hasRoute reports whether the API serves method pattern.
func hasRoute(t *testing.T, method, pattern string) bool {
	for _, rt := range apiRoutes(t) {
		if rt.Method == method && rt.Pattern == pattern {
			return true
		}
	}
	return false
}

// waitFor polls cond every 50 ms until it holds or within passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %v", what, within)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
