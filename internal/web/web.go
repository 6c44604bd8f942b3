// Package web is pgrelay's web UI: server-rendered pages (html/template),
// one small hand-written JavaScript file and one stylesheet, all embedded,
// nothing loaded from other hosts.
//
// People sign in with an API token. The UI then keeps a signed session
// cookie (HttpOnly, SameSite=Strict) that names a session the store keeps
// (never the token), and checks on every request that the session exists
// and its token is still active: signing out deletes the session, and
// revoking a token ends its sessions, at once. Every POST carries a CSRF
// token bound to the session and passes a cross-origin check. Pages call
// the use cases of package app and nothing below it; viewers see no
// controls that change anything, and the server refuses such requests from
// them too.
//
// A connection can be tested from the list, its page and its form: the
// steps appear live as the script reads the REST API's test stream (POST
// /api/v1/connections/{name}/test, or /api/v1/connections/test for an
// unsaved form, with the session cookie and its CSRF token in the
// X-CSRF-Token header); without the script the button posts the form and
// the page comes back with the whole report. The Permissions page audits
// the privileges a dbt run needs and shows the GRANTs that add what is
// missing.
//
// Besides connections, the UI lists jobs and their runs, edits a job as
// fields or as YAML, starts and cancels runs, and shows a run whose log,
// status and steps follow it live: the run page's script reads the REST
// API's event stream (GET /api/v1/runs/{id}/events, with the session
// cookie), or polls the run and its log where the stream is not available.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
)

//go:embed assets
var assetsFS embed.FS

// DefaultSessionTTL is how long a sign-in lasts.
const DefaultSessionTTL = 12 * time.Hour

// Config configures the UI.
type Config struct {
	// App runs the use cases. Required.
	App *app.Service
	// Sessions signs session cookies and CSRF tokens. Required.
	Sessions *auth.Sessions
	// Logger receives the detail of unexpected errors; default discards.
	Logger *slog.Logger
	// SecureCookies sets the Secure flag on cookies (when serving HTTPS).
	SecureCookies bool
	// PublicURL is the URL people reach the server at, when a proxy stands
	// in front of it: an https URL makes cookies Secure, and its origin
	// passes the cross-origin check. Nil when people reach the server
	// directly.
	PublicURL *url.URL
	// SessionTTL is how long a sign-in lasts; default DefaultSessionTTL.
	SessionTTL time.Duration
}

// UI is the web UI. It is safe for concurrent use.
type UI struct {
	cfg      Config
	pages    map[string]*template.Template
	static   fs.FS
	versions map[string]string // static file name -> content hash
	cop      *http.CrossOriginProtection
	// now is the clock of relative times ("5 min ago").
	now func() time.Time
}

// pageNames lists the page templates; each is parsed with the layout.
func pageNames() []string {
	return []string{"login", "list", "form", "show", "delete", "rotate", "error", "grants",
		"jobs", "job", "job-form", "job-delete", "runs", "run", "audit"}
}

// New parses the embedded templates and returns the UI.
func New(cfg Config) (*UI, error) {
	if cfg.App == nil || cfg.Sessions == nil {
		return nil, errors.New("web: App and Sessions are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	static, err := fs.Sub(assetsFS, "assets/static")
	if err != nil {
		return nil, fmt.Errorf("web: static assets: %w", err)
	}
	cop, err := auth.OriginProtection(cfg.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	u := &UI{cfg: cfg, static: static, versions: map[string]string{}, pages: map[string]*template.Template{},
		cop: cop, now: time.Now}
	entries, err := fs.ReadDir(static, ".")
	if err != nil {
		return nil, fmt.Errorf("web: static assets: %w", err)
	}
	for _, e := range entries {
		b, err := fs.ReadFile(static, e.Name())
		if err != nil {
			return nil, fmt.Errorf("web: static asset %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(b)
		u.versions[e.Name()] = hex.EncodeToString(sum[:6])
	}
	funcs := u.templateFuncs()
	for _, name := range pageNames() {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assetsFS,
			"assets/templates/layout.html", "assets/templates/partials.html", "assets/templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: parse template %s: %w", name, err)
		}
		u.pages[name] = t
	}
	return u, nil
}

// secureCookies reports whether cookies get the Secure flag: when serving
// HTTPS, or behind a proxy that does (an https PublicURL).
func (u *UI) secureCookies() bool {
	return u.cfg.SecureCookies || u.cfg.PublicURL != nil && u.cfg.PublicURL.Scheme == "https"
}

// Register mounts the UI's routes on mux. The catch-all "/" serves the
// 404 page; it is less specific than any other face's routes, so it never
// conflicts with them.
func (u *UI) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /static/{file}", u.serveStatic)
	mux.HandleFunc("GET /login", u.loginPage)
	mux.HandleFunc("POST /login", u.login)
	mux.Handle("POST /logout", u.authed(u.logout))

	mux.Handle("GET /{$}", u.authed(u.list))
	mux.Handle("GET /connections", u.authed(u.list))
	mux.Handle("GET /new", u.authed(u.writer(u.newForm)))
	mux.Handle("POST /connections", u.authed(u.writer(u.create)))
	mux.Handle("GET /connections/new", u.authed(u.writer(u.newForm)))
	mux.Handle("GET /connections/{name}", u.authed(u.show))
	mux.Handle("GET /connections/{name}/{$}", u.authed(u.show)) // the page of a connection named "new"
	mux.Handle("GET /connections/{name}/bastion-setup.sh", u.authed(u.setupScript))
	mux.Handle("GET /connections/{name}/edit", u.authed(u.writer(u.editForm)))
	mux.Handle("POST /connections/{name}/edit", u.authed(u.writer(u.update)))
	mux.Handle("GET /connections/{name}/delete", u.authed(u.writer(u.deletePage)))
	mux.Handle("POST /connections/{name}/delete", u.authed(u.writer(u.deleteConnection)))
	mux.Handle("GET /connections/{name}/rotate-key", u.authed(u.writer(u.rotatePage)))
	mux.Handle("POST /connections/{name}/rotate-key", u.authed(u.writer(u.rotateKey)))
	mux.Handle("POST /connections/{name}/rotate-key/start", u.authed(u.writer(u.rotateStart)))
	mux.Handle("POST /connections/{name}/rotate-key/finish", u.authed(u.writer(u.rotateFinish)))
	mux.Handle("POST /connections/{name}/rotate-key/cancel", u.authed(u.writer(u.rotateCancel)))
	mux.Handle("POST /connections/{name}/trust-host-key", u.authed(u.writer(u.trustHostKey)))
	mux.Handle("POST /connections/{name}/test", u.authed(u.useGuard(u.testSaved)))
	mux.Handle("POST /new/test", u.authed(u.writer(u.useGuard(u.testNewDraft))))
	mux.Handle("POST /connections/{name}/edit/test", u.authed(u.writer(u.useGuard(u.testEditDraft))))
	mux.Handle("GET /connections/{name}/grants", u.authed(u.useGuard(u.grantsPage)))
	mux.Handle("POST /connections/{name}/grants", u.authed(u.useGuard(u.grantsAudit)))

	mux.Handle("GET /jobs", u.authed(u.jobsList))
	mux.Handle("GET /jobs/new", u.authed(u.jobWriter(u.newJobForm)))
	mux.Handle("POST /jobs", u.authed(u.jobWriter(u.createJob)))
	mux.Handle("GET /jobs/{name}", u.authed(u.showJob))
	mux.Handle("GET /jobs/{name}/{$}", u.authed(u.showJob)) // the page of a job named "new"
	mux.Handle("GET /jobs/{name}/edit", u.authed(u.jobWriter(u.editJobForm)))
	mux.Handle("POST /jobs/{name}/edit", u.authed(u.jobWriter(u.updateJob)))
	mux.Handle("GET /jobs/{name}/delete", u.authed(u.jobWriter(u.deleteJobPage)))
	mux.Handle("POST /jobs/{name}/delete", u.authed(u.jobWriter(u.deleteJob)))
	mux.Handle("POST /jobs/{name}/run", u.authed(u.runner(u.runJob)))
	mux.Handle("GET /runs", u.authed(u.runsList))
	mux.Handle("GET /runs/{id}", u.authed(u.showRun))
	mux.Handle("POST /runs/{id}/cancel", u.authed(u.runner(u.cancelRun)))
	mux.Handle("GET /audit", u.authed(u.auditor(u.auditPage)))

	mux.HandleFunc("/", u.notFound)
}

// assetURL returns the URL of a static file with its content hash, so that
// it can be cached for long and still change with a new build.
func (u *UI) assetURL(name string) string {
	return "/static/" + name + "?v=" + u.versions[name]
}

func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	v, ok := u.versions[name]
	if !ok {
		u.notFound(w, r)
		return
	}
	if r.URL.Query().Get("v") == v {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("ETag", `"`+v+`"`)
	switch path.Ext(name) {
	case ".css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
	case ".js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	case ".svg":
		w.Header().Set("Content-Type", "image/svg+xml")
	}
	http.ServeFileFS(w, r, u.static, name)
}
