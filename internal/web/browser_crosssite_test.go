package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// exchange is one request that reached pgrelay, as the browser sent it,
// and the response it got.
type exchange struct {
	Method, Path string
	// Attack is the request's ?attack= tag, set by the attacker's pages
	// so that each attempt can be found.
	Attack string
	// Cookie reports whether the session cookie came with the request.
	Cookie bool
	// FetchSite and FetchDest are the browser's Sec-Fetch-Site and
	// Sec-Fetch-Dest headers.
	FetchSite, FetchDest string
	Origin               string
	CSRFHeader           bool
	Status               int
	// Header is the response's header.
	Header http.Header
}

// recorder is an http.Handler that records every exchange with the handler
// it wraps.
type recorder struct {
	next http.Handler
	mu   sync.Mutex
	log  []exchange
}

// statusRecorder keeps the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(auth.SessionCookie)
	ex := exchange{Method: r.Method, Path: r.URL.Path, Attack: r.URL.Query().Get("attack"),
		Cookie: err == nil && c.Value != "", FetchSite: r.Header.Get("Sec-Fetch-Site"),
		FetchDest: r.Header.Get("Sec-Fetch-Dest"), Origin: r.Header.Get("Origin"),
		CSRFHeader: r.Header.Get(auth.CSRFHeader) != ""}
	sw := &statusRecorder{ResponseWriter: w}
	rec.next.ServeHTTP(sw, r)
	ex.Status = sw.status
	if ex.Status == 0 {
		ex.Status = http.StatusOK
	}
	ex.Header = w.Header().Clone()
	rec.mu.Lock()
	rec.log = append(rec.log, ex)
	rec.mu.Unlock()
}

// mark returns a position in the log, for since.
func (rec *recorder) mark() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.log)
}

// since returns the exchanges after mark m.
func (rec *recorder) since(m int) []exchange {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]exchange(nil), rec.log[m:]...)
}

// wait returns the first exchange after mark m that match accepts, waiting
// for it a while (the browser may see a response before the handler
// returns); it fails the test when none comes.
func (rec *recorder) wait(t *testing.T, m int, what string, match func(exchange) bool) exchange {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, ex := range rec.since(m) {
			if match(ex) {
				return ex
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached pgrelay; it saw:\n%s", what, formatExchanges(rec.since(m)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func formatExchanges(xs []exchange) string {
	var b strings.Builder
	for _, x := range xs {
		fmt.Fprintf(&b, "  %s %s attack=%q cookie=%v site=%q dest=%q origin=%q -> %d\n",
			x.Method, x.Path, x.Attack, x.Cookie, x.FetchSite, x.FetchDest, x.Origin, x.Status)
	}
	return b.String()
}

// attackerSite serves pages that the test writes, from its own origin.
type attackerSite struct {
	URL   string
	mu    sync.Mutex
	pages map[string]string
}

// startAttacker serves an attacker's site on addr ("127.0.0.2:0").
func startAttacker(t *testing.T, addr string) *attackerSite {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("attacker site on %s: %v", addr, err)
	}
	a := &attackerSite{pages: map[string]string{}}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		body, ok := a.pages[r.URL.Path]
		a.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(body))
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	a.URL = srv.URL
	return a
}

// page publishes an HTML page at path and returns its URL.
func (a *attackerSite) page(path, body string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pages[path] = "<!doctype html><html><head><title>cute cats</title></head><body>" + body + "</body></html>"
	return a.URL + path
}

// autoSubmit is a page with a hidden form that posts itself to action as
// soon as the page has loaded.
func autoSubmit(action, enctype string, fields map[string]string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<form id="f" method="post" action="%s"`, html.EscapeString(action))
	if enctype != "" {
		fmt.Fprintf(&b, ` enctype="%s"`, enctype)
	}
	b.WriteString(` style="display:none">`)
	for k, v := range fields {
		fmt.Fprintf(&b, `<input type="hidden" name="%s" value="%s">`, html.EscapeString(k), html.EscapeString(v))
	}
	b.WriteString(`</form><script>window.addEventListener("load", () => document.getElementById("f").submit())</script>`)
	return b.String()
}

// goTo shows a blank page, then starts a navigation of the tab to u and
// returns without waiting for it (the page may navigate on by itself).
func (b *tab) goTo(u string) {
	b.t.Helper()
	b.do("blank page", chromedp.Navigate("about:blank"))
	b.do("navigate to "+u, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.Navigate, page.NavigateParams{URL: u})
		return err
	}))
}

// landOn waits until the tab shows a loaded page whose URL starts with
// prefix, and returns that URL.
func (b *tab) landOn(prefix string) string {
	b.t.Helper()
	return b.poll("a page of "+prefix, `document.readyState === "complete" && location.href.startsWith(`+strconv.Quote(prefix)+`) ? location.href : ""`)
}

// poll evaluates js until it gives a non-empty string, and returns it. It
// rides out navigations (which make an evaluation fail) and fails the test
// after 15 s.
func (b *tab) poll(what, js string) string {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last string
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		cancel()
		if err == nil && v != "" {
			return v
		}
		last, lastErr = v, err
		time.Sleep(50 * time.Millisecond)
	}
	b.t.Fatalf("waited 15s for %s (last: %q, %v)", what, last, lastErr)
	return ""
}

// cookies returns the browser's cookies for u.
func (b *tab) cookies(u string) []*network.Cookie {
	b.t.Helper()
	return run(b, "cookies of "+u, chromedp.Action[[]*network.Cookie](func(ctx context.Context, tg *chromedp.Target) ([]*network.Cookie, error) {
		res, err := cdp.Call(ctx, tg, network.GetCookies, network.GetCookiesParams{URLs: []string{u}})
		if err != nil {
			return nil, err
		}
		return res.Cookies, nil
	}))
}

// sessionCookie returns the browser's session cookie for u, or nil.
func (b *tab) sessionCookie(u string) *network.Cookie {
	b.t.Helper()
	for _, c := range b.cookies(u) {
		if c.Name == auth.SessionCookie {
			return c
		}
	}
	return nil
}

// childFrameURL returns the URL of the document shown in the page's only
// iframe: from the page's frame tree when the iframe runs in the page's
// process (same site), else by attaching to the iframe's own target (an
// out-of-process iframe of another site). A frame whose content the
// browser refused shows an error page (chrome-error://...).
func (b *tab) childFrameURL() string {
	b.t.Helper()
	tree := run(b, "frame tree", chromedp.Action[*page.FrameTree](func(ctx context.Context, tg *chromedp.Target) (*page.FrameTree, error) {
		res, err := cdp.Call(ctx, tg, page.GetFrameTree, cdp.Empty{})
		if err != nil {
			return nil, err
		}
		return res.FrameTree, nil
	}))
	if len(tree.ChildFrames) > 0 {
		return tree.ChildFrames[0].Frame.URL
	}
	tabID := chromedp.FromContext(b.ctx).Target.TargetID
	infos, err := chromedp.Targets(b.ctx)
	if err != nil {
		b.t.Fatalf("list targets: %v", err)
	}
	for _, info := range infos {
		if info.Type != "iframe" || info.ParentID != tabID {
			continue
		}
		fctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithTargetID(info.TargetID), chromedp.WithDetachOnCancel())
		defer cancel()
		ctx, cancelT := context.WithTimeout(fctx, 10*time.Second)
		defer cancelT()
		loc, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href`))
		if err != nil {
			b.t.Fatalf("read the iframe's location: %v", err)
		}
		return loc
	}
	b.t.Fatal("the page has no iframe")
	return ""
}

// crossSiteServer serves the HTTP server of s (REST API and web UI,
// mounted as `pgrelay serve` mounts them) on another 127.0.0.1 port, and
// records every exchange.
func crossSiteServer(t *testing.T, s *stack) (string, *recorder) {
	t.Helper()
	rec := &recorder{next: s.handler}
	ts := httptest.NewServer(rec)
	t.Cleanup(ts.Close)
	return ts.URL, rec
}

// TestBrowserCrossSite attacks a signed-in pgrelay user from other sites in
// a real Chromium: pgrelay on 127.0.0.1, one attacker on 127.0.0.2 (another
// site to the browser) and one on 127.0.0.1 with another port (the same
// site but another origin, like another service on the host). The
// attackers' pages post hidden forms to the UI's endpoints, call the REST
// API with fetch and the user's cookies, and frame pgrelay. Nothing may
// change in the store, no response may be readable and no frame may show.
//
// Each protection has its own check, so that each one fails the test when
// it is removed: the session cookie's SameSite=Strict (cross-site requests
// arrive without it), the UI's Sec-Fetch-Site/Origin check (same-site forms
// carrying a leaked CSRF token get 403), the API's CSRF header check
// (same-site simple requests with the cookie get 403), the absence of CORS
// headers (reads fail), X-Frame-Options and frame-ancestors (frames show an
// error page) and HttpOnly (scripts do not see the cookie). The CSRF form
// field itself cannot be isolated from a browser, which always sends
// Sec-Fetch-Site; TestCSRF checks it.
func TestBrowserCrossSite(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	browser, err := startBrowser(t, chromium)
	if err != nil {
		t.Fatalf("start chromium %s: %v", chromium, err)
	}
	s := newStackWith(t, stackOptions{Queue: true})
	ctx := context.Background()
	addConnection(t, s, "wh")
	if _, _, err := s.App.PutJob(ctx, jobs.Job{Name: "nightly", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}}); err != nil {
		t.Fatal(err)
	}
	pg, rec := crossSiteServer(t, s)
	crossSite := startAttacker(t, "127.0.0.2:0")
	sameSite := startAttacker(t, "127.0.0.1:0")

	victim := newTab(t, browser, pg)
	victim.open("/connections")
	victim.login(s.Tokens[auth.Admin].Token)
	if loc := victim.location(); loc != "/connections" {
		t.Fatalf("after sign-in: location %q", loc)
	}
	// The worst case: the attacker knows the session's CSRF token (from a
	// screenshot, a log, a shoulder).
	leaked := victim.value("input[name=" + auth.CSRFField + "]")
	before := victim.sessionCookie(pg)
	if before == nil {
		t.Fatal("no session cookie after sign-in")
	}

	t.Run("CookieFlags", func(t *testing.T) {
		victim.t = t
		c := victim.sessionCookie(pg)
		if !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Secure || c.Path != "/" {
			t.Errorf("session cookie: HttpOnly=%v SameSite=%q Secure=%v Path=%q; want HttpOnly, Strict, not Secure on http, /",
				c.HTTPOnly, c.SameSite, c.Secure, c.Path)
		}
		if got := victim.eval(`document.cookie`); strings.Contains(got, auth.SessionCookie) || strings.Contains(got, c.Value) {
			t.Errorf("document.cookie shows the session cookie: %q", got)
		}
	})

	type origin struct {
		name      string
		site      *attackerSite
		fetchSite string // Sec-Fetch-Site pgrelay sees
		cookie    bool   // whether SameSite=Strict lets the cookie through
		// formStatus and apiStatus are pgrelay's answers to a form post and
		// to a simple API request.
		formStatus, apiStatus int
	}
	origins := []origin{
		{name: "CrossSite", site: crossSite, fetchSite: "cross-site", cookie: false,
			formStatus: http.StatusSeeOther, apiStatus: http.StatusUnauthorized},
		{name: "SameSiteOtherOrigin", site: sameSite, fetchSite: "same-site", cookie: true,
			formStatus: http.StatusForbidden, apiStatus: http.StatusForbidden},
	}
	connJSON := `{"name":"evil","host":"evil.example","database":"d","user":"u","password":"p"}`
	// A form can send JSON as text/plain: the field's name and value
	// join with "=" into {"...","pad":"="}.
	smuggled := strings.TrimSuffix(connJSON, "}") + `,"pad":"`

	for _, o := range origins {
		t.Run(o.name, func(t *testing.T) {
			victim.t = t
			checkArrival := func(t *testing.T, ex exchange) {
				t.Helper()
				if ex.FetchSite != o.fetchSite {
					t.Errorf("%s %s: Sec-Fetch-Site %q, want %q: the browser does not see the attacker as the test means it",
						ex.Method, ex.Path, ex.FetchSite, o.fetchSite)
				}
				if ex.Cookie != o.cookie {
					t.Errorf("%s %s from %s: session cookie sent = %v, want %v", ex.Method, ex.Path, o.site.URL, ex.Cookie, o.cookie)
				}
				if acao := ex.Header.Get("Access-Control-Allow-Origin"); acao != "" {
					t.Errorf("%s %s: Access-Control-Allow-Origin %q", ex.Method, ex.Path, acao)
				}
			}

			t.Run("Forms", func(t *testing.T) {
				victim.t = t
				forms := []struct {
					attack, path string
					enctype      string
					fields       map[string]string
					status       int
				}{
					{"delete", "/connections/wh/delete", "", map[string]string{"confirm": "wh"}, o.formStatus},
					{"create", "/connections", "", map[string]string{"name": "evil", "flavor": "postgres", "host": "evil.example",
						"port": "5432", "database": "d", "user": "u", "password": "p", "sslmode": "prefer", "threads": "4"}, o.formStatus},
					{"run", "/jobs/nightly/run", "", nil, o.formStatus},
					{"logout", "/logout", "", nil, o.formStatus},
					// Signing the victim in as the attacker (login CSRF).
					{"login", "/login", "", map[string]string{"token": s.Tokens[auth.Viewer].Token}, http.StatusForbidden},
					{"api-create", api.Prefix + "/connections", "text/plain", map[string]string{smuggled: `"}`}, o.apiStatus},
				}
				for _, withToken := range []bool{false, true} {
					for _, f := range forms {
						fields := map[string]string{}
						for k, v := range f.fields {
							fields[k] = v
						}
						if withToken && f.enctype == "" && f.attack != "login" {
							fields[auth.CSRFField] = leaked
						}
						tag := fmt.Sprintf("%s-%s-token=%v", o.name, f.attack, withToken)
						m := rec.mark()
						victim.goTo(o.site.page("/"+tag, autoSubmit(pg+f.path+"?attack="+url.QueryEscape(tag), f.enctype, fields)))
						victim.landOn(pg + "/")
						ex := rec.wait(t, m, tag, func(ex exchange) bool { return ex.Attack == tag && ex.Method == http.MethodPost })
						checkArrival(t, ex)
						if ex.Status != f.status {
							t.Errorf("%s: status %d, want %d", tag, ex.Status, f.status)
						}
						if f.status == http.StatusSeeOther {
							if loc := ex.Header.Get("Location"); !strings.HasPrefix(loc, "/login") {
								t.Errorf("%s: redirected to %q, want the sign-in page", tag, loc)
							}
						}
					}
				}
			})

			t.Run("Fetch", func(t *testing.T) {
				victim.t = t
				js := fmt.Sprintf(`<script>
const pg = %q, body = %q, leaked = %q, tag = %q;
async function attempt(attack, path, init) {
  const u = pg + path + "?attack=" + encodeURIComponent(tag + "-" + attack);
  try {
    const r = await fetch(u, Object.assign({credentials: "include"}, init));
    let text = "";
    try { text = await r.text(); } catch (e) {}
    return {attack, outcome: r.type === "opaque" ? "opaque" : "read", status: r.status, text};
  } catch (e) {
    return {attack, outcome: "blocked", text: String(e)};
  }
}
(async () => {
  const out = [];
  out.push(await attempt("read", "/api/v1/connections", {}));
  out.push(await attempt("create-json", "/api/v1/connections", {method: "POST", headers: {"Content-Type": "application/json"}, body}));
  out.push(await attempt("create-csrf-header", "/api/v1/connections", {method: "POST", headers: {"Content-Type": "text/plain", "X-CSRF-Token": leaked}, body}));
  out.push(await attempt("delete", "/api/v1/connections/wh", {method: "DELETE"}));
  out.push(await attempt("create-simple", "/api/v1/connections", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body}));
  out.push(await attempt("run-simple", "/api/v1/jobs/nightly/runs", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: "{}"}));
  out.push(await attempt("token-simple", "/api/v1/tokens", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: '{"name":"evil","role":"admin"}'}));
  window.results = JSON.stringify(out);
})();
</script>`, pg, connJSON, leaked, o.name)
				m := rec.mark()
				victim.openURL(o.site.page("/fetch-"+o.name, js))
				var results []struct{ Attack, Outcome, Text string }
				if err := json.Unmarshal([]byte(victim.poll("the fetch attempts", `window.results || ""`)), &results); err != nil {
					t.Fatal(err)
				}
				got := map[string]string{}
				for _, r := range results {
					got[r.Attack] = r.Outcome
					if r.Outcome == "read" || (r.Outcome == "opaque" && r.Text != "") {
						t.Errorf("%s: the attacker read the response: %q", r.Attack, r.Text)
					}
				}
				tagged := func(attack string) string { return o.name + "-" + attack }
				// Reading needs CORS, which pgrelay never grants: the
				// request is sent (with the cookie from the same site),
				// the answer is withheld from the page.
				if got["read"] != "blocked" {
					t.Errorf("read: %s, want blocked", got["read"])
				}
				checkArrival(t, rec.wait(t, m, "read", func(ex exchange) bool { return ex.Attack == tagged("read") }))
				// Non-simple requests need a preflight, which pgrelay
				// refuses, so the request itself is never sent.
				for _, a := range []string{"create-json", "create-csrf-header", "delete"} {
					if got[a] != "blocked" {
						t.Errorf("%s: %s, want blocked", a, got[a])
					}
					pre := rec.wait(t, m, a+" preflight", func(ex exchange) bool { return ex.Attack == tagged(a) })
					if pre.Method != http.MethodOptions || pre.Status < 400 {
						t.Errorf("%s: first request %s answered %d, want a refused OPTIONS preflight", a, pre.Method, pre.Status)
					}
					if acao := pre.Header.Get("Access-Control-Allow-Origin"); acao != "" {
						t.Errorf("%s preflight: Access-Control-Allow-Origin %q", a, acao)
					}
				}
				// Simple requests are sent, and refused.
				for _, a := range []string{"create-simple", "run-simple", "token-simple"} {
					if got[a] != "opaque" {
						t.Errorf("%s: %s, want an opaque response", a, got[a])
					}
					ex := rec.wait(t, m, a, func(ex exchange) bool { return ex.Attack == tagged(a) })
					checkArrival(t, ex)
					if ex.Status != o.apiStatus {
						t.Errorf("%s: status %d, want %d", a, ex.Status, o.apiStatus)
					}
				}
				for _, ex := range rec.since(m) {
					if ex.Method != http.MethodGet && ex.Method != http.MethodOptions && ex.CSRFHeader {
						t.Errorf("%s %s was sent with the CSRF header", ex.Method, ex.Path)
					}
					if ex.Method == http.MethodDelete {
						t.Errorf("DELETE %s was sent", ex.Path)
					}
				}
			})

			t.Run("Frame", func(t *testing.T) {
				victim.t = t
				m := rec.mark()
				victim.openURL(o.site.page("/frame-"+o.name, fmt.Sprintf(
					`<iframe src="%s/connections?attack=frame" onload="window.framed = true" width="800" height="600"></iframe>`, pg)))
				victim.poll("the iframe's load event", `window.framed ? "yes" : ""`)
				// The document the frame was sent: the list, or (without the
				// cookie) the sign-in page it was redirected to.
				ex := rec.wait(t, m, "the framed page", func(ex exchange) bool { return ex.FetchDest == "iframe" && ex.Status == http.StatusOK })
				checkArrival(t, ex)
				if got := ex.Header.Get("X-Frame-Options"); got != "DENY" {
					t.Errorf("framed %s: X-Frame-Options %q, want DENY", ex.Path, got)
				}
				if got := ex.Header.Get("Content-Security-Policy"); !strings.Contains(got, "frame-ancestors 'none'") {
					t.Errorf("framed %s: Content-Security-Policy %q, want frame-ancestors 'none'", ex.Path, got)
				}
				if loc := victim.childFrameURL(); strings.HasPrefix(loc, pg) || !strings.HasPrefix(loc, "chrome-error:") {
					t.Errorf("the iframe shows %q: pgrelay can be framed", loc)
				}
			})
		})
	}

	// A link from another site opens pgrelay signed out: Strict, unlike
	// Lax, keeps the cookie from cross-site navigations too.
	t.Run("CrossSiteLink", func(t *testing.T) {
		victim.t = t
		m := rec.mark()
		victim.goTo(crossSite.page("/link", fmt.Sprintf(
			`<script>window.addEventListener("load", () => { location.href = %q })</script>`, pg+"/connections?attack=link")))
		if loc := victim.landOn(pg + "/"); !strings.HasPrefix(loc, pg+"/login") {
			t.Errorf("a link from another site landed signed in on %s", loc)
		}
		ex := rec.wait(t, m, "the link", func(ex exchange) bool { return ex.Attack == "link" })
		if ex.Cookie || ex.FetchSite != "cross-site" {
			t.Errorf("link: cookie %v, Sec-Fetch-Site %q", ex.Cookie, ex.FetchSite)
		}
	})

	t.Run("NothingChanged", func(t *testing.T) {
		victim.t = t
		cs, err := s.App.ListConnections(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 || cs[0].Name != "wh" {
			var names []string
			for _, c := range cs {
				names = append(names, c.Name)
			}
			t.Errorf("connections after the attacks: %v, want [wh]", names)
		}
		runs, err := s.App.ListRuns(ctx, store.RunFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) != 0 {
			t.Errorf("the attacks started %d runs", len(runs))
		}
		toks, err := s.App.ListTokens(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(toks) != len(s.Tokens) {
			t.Errorf("%d tokens after the attacks, want %d", len(toks), len(s.Tokens))
		}
		// The victim is still signed in, as themselves.
		if c := victim.sessionCookie(pg); c == nil || c.Value != before.Value {
			t.Errorf("the session cookie changed: %+v", c)
		}
		victim.open("/connections")
		if loc := victim.location(); loc != "/connections" {
			t.Fatalf("victim signed out: location %q", loc)
		}
		if who := victim.text(".user-who"); !strings.Contains(who, "alice-admin") {
			t.Errorf("victim is now %q", who)
		}
	})
}

// openURL navigates to an absolute URL and waits for it to load.
func (b *tab) openURL(u string) {
	b.t.Helper()
	b.do("open "+u, chromedp.Navigate(u))
}
