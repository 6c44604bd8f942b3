// Package api is pgrelay's REST API under /api/v1: JSON in and out,
// snake_case, every route checked against the caller's role.
//
// Each route is declared once, in the table built by New, with the
// auth.Action it requires; Register mounts the table and Routes lists it, so
// the access-control test and the OpenAPI check walk exactly what is served.
// A request is authenticated by a bearer token (Authorization: Bearer ...)
// or by the web UI's session cookie; a cookie-authenticated request that
// changes state must also carry the session's CSRF token. Handlers call one
// use case of package app and translate its errors into
// {"error": {"code", "message", "fields"}} with a fitting status; unknown
// errors become a generic 500 whose detail goes only to the log. A run can
// be followed live as server-sent events (GET /runs/{id}/events), read
// from the store so that runs of every process sharing it can be followed;
// a connection test (POST /connections/{name}/test, or /connections/test
// for an unsaved draft) streams its steps the same way when asked to.
package api

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/metrics"
)

// Prefix is the path prefix of every API route.
const Prefix = apiwire.Prefix

// Defaults of Config.
const (
	// DefaultMaxRows is how many rows a query returns before its result is
	// cut off and marked truncated.
	DefaultMaxRows = 10_000
	// DefaultMaxResultBytes bounds the text of a query's rows in one
	// response.
	DefaultMaxResultBytes = 32 << 20
	// DefaultQueryTimeout bounds one query request.
	DefaultQueryTimeout = apiwire.DefaultQueryTimeout
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes = 1 << 20
)

// Config configures the API.
type Config struct {
	App *app.Service
	// Sessions checks the web UI's session cookie and its CSRF token; nil
	// accepts bearer tokens only.
	Sessions *auth.Sessions
	Metrics  *metrics.Metrics
	Logger   *slog.Logger
	// MaxRows is how many rows a query returns before the result is
	// truncated; default DefaultMaxRows.
	MaxRows int
	// MaxResultBytes bounds the row text of a query response; default
	// DefaultMaxResultBytes.
	MaxResultBytes int64
	// QueryTimeout bounds a query request; default DefaultQueryTimeout.
	QueryTimeout time.Duration
	// Done, when closed, ends the run event streams, so that a graceful
	// shutdown does not wait for runs to end; nil never ends them.
	Done <-chan struct{}
	// StreamPoll is how often a run event stream reads the store;
	// default DefaultStreamPoll.
	StreamPoll time.Duration
	// StreamKeepalive is how often a quiet event stream sends a comment;
	// default DefaultStreamKeepalive.
	StreamKeepalive time.Duration
	// StreamAuthCheck is how often a run event stream checks that its
	// token is not revoked and its session not ended; default
	// DefaultStreamAuthCheck.
	StreamAuthCheck time.Duration
	// MaxStreamsPerToken bounds the run event streams one token has open
	// at once (its sessions included); more get 429. Default
	// DefaultMaxStreamsPerToken.
	MaxStreamsPerToken int
	// OriginProtection is the cross-origin check of cookie-authenticated
	// changes (see auth.OriginProtection, which trusts the origin of
	// `serve --public-url`); nil is http.NewCrossOriginProtection().
	OriginProtection *http.CrossOriginProtection
}

// API is the REST API.
type API struct {
	cfg    Config
	log    *slog.Logger
	routes []route
	// known holds every route pattern (with a no-op handler) to tell an
	// unknown path (404) from a known path with another method (405).
	known *http.ServeMux
	// streams counts the open run event streams per token ID.
	streams streamCounter
}

// Route is one API route and the action it requires.
type Route struct {
	Method  string
	Pattern string
	// Action is what the caller's role must allow (auth.Role.Can).
	Action auth.Action
	// Public routes need no credentials (only the OpenAPI document);
	// Action is empty for them.
	Public bool
}

// route is a Route with its handler. A handler returns an error instead
// of writing it, so that every error goes through writeError.
type route struct {
	Route
	handle func(w http.ResponseWriter, r *http.Request) error
}

// New returns the API.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxRows <= 0 {
		cfg.MaxRows = DefaultMaxRows
	}
	if cfg.MaxResultBytes <= 0 {
		cfg.MaxResultBytes = DefaultMaxResultBytes
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = DefaultQueryTimeout
	}
	if cfg.StreamPoll <= 0 {
		cfg.StreamPoll = DefaultStreamPoll
	}
	if cfg.StreamKeepalive <= 0 {
		cfg.StreamKeepalive = DefaultStreamKeepalive
	}
	if cfg.StreamAuthCheck <= 0 {
		cfg.StreamAuthCheck = DefaultStreamAuthCheck
	}
	if cfg.MaxStreamsPerToken <= 0 {
		cfg.MaxStreamsPerToken = DefaultMaxStreamsPerToken
	}
	if cfg.OriginProtection == nil {
		cfg.OriginProtection = http.NewCrossOriginProtection()
	}
	a := &API{cfg: cfg, log: cfg.Logger, known: http.NewServeMux(), streams: streamCounter{open: map[string]int{}}}
	get, post, put, del := http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete
	conn := Prefix + "/connections/{name}"
	job := Prefix + "/jobs/{name}"
	run := Prefix + "/runs/{id}"
	a.routes = []route{
		{Route{Method: get, Pattern: Prefix + "/openapi.json", Public: true}, a.openAPI},
		{Route{Method: get, Pattern: Prefix + "/whoami", Action: auth.Read}, a.whoAmI},

		{Route{Method: get, Pattern: Prefix + "/connections", Action: auth.Read}, a.listConnections},
		{Route{Method: post, Pattern: Prefix + "/connections", Action: auth.Write}, a.createConnection},
		{Route{Method: get, Pattern: conn, Action: auth.Read}, a.getConnection},
		{Route{Method: put, Pattern: conn, Action: auth.Write}, a.updateConnection},
		{Route{Method: del, Pattern: conn, Action: auth.Write}, a.deleteConnection},
		{Route{Method: get, Pattern: conn + "/public-key", Action: auth.Read}, a.publicKey},
		{Route{Method: get, Pattern: conn + "/bastion-setup", Action: auth.Read}, a.bastionSetup},
		{Route{Method: post, Pattern: conn + "/rotate-key", Action: auth.Write}, a.rotateKey},
		{Route{Method: post, Pattern: conn + "/trust-host-key", Action: auth.Write}, a.trustHostKey},
		{Route{Method: get, Pattern: conn + "/key-rotation", Action: auth.Read}, a.keyRotation},
		{Route{Method: post, Pattern: conn + "/key-rotation", Action: auth.Write}, a.startKeyRotation},
		{Route{Method: post, Pattern: conn + "/key-rotation/finish", Action: auth.Write}, a.finishKeyRotation},
		{Route{Method: del, Pattern: conn + "/key-rotation", Action: auth.Write}, a.cancelKeyRotation},
		{Route{Method: get, Pattern: Prefix + "/ssh-ca", Action: auth.Read}, a.getSSHCA},
		{Route{Method: post, Pattern: Prefix + "/ssh-ca", Action: auth.ManageCA}, a.initSSHCA},
		{Route{Method: put, Pattern: Prefix + "/ssh-ca/principals", Action: auth.ManageCA}, a.setSSHCAPrincipals},
		{Route{Method: post, Pattern: conn + "/query", Action: auth.Use}, a.query},
		{Route{Method: post, Pattern: conn + "/test", Action: auth.Use}, a.testConnection},
		{Route{Method: post, Pattern: Prefix + "/connections/test", Action: auth.Use}, a.testDraft},
		{Route{Method: post, Pattern: conn + "/grants", Action: auth.Use}, a.grantsAudit},

		{Route{Method: get, Pattern: Prefix + "/jobs", Action: auth.Read}, a.listJobs},
		{Route{Method: post, Pattern: Prefix + "/jobs", Action: auth.Write}, a.createJob},
		{Route{Method: post, Pattern: Prefix + "/jobs/apply", Action: auth.Write}, a.applyJobs},
		{Route{Method: get, Pattern: job, Action: auth.Read}, a.getJob},
		{Route{Method: put, Pattern: job, Action: auth.Write}, a.putJob},
		{Route{Method: del, Pattern: job, Action: auth.Write}, a.deleteJob},
		{Route{Method: post, Pattern: job + "/runs", Action: auth.Use}, a.runJob},

		{Route{Method: get, Pattern: Prefix + "/runs", Action: auth.Read}, a.listRuns},
		{Route{Method: get, Pattern: run, Action: auth.Read}, a.getRun},
		{Route{Method: post, Pattern: run + "/cancel", Action: auth.Use}, a.cancelRun},
		{Route{Method: get, Pattern: run + "/log", Action: auth.Read}, a.runLog},
		{Route{Method: get, Pattern: run + "/events", Action: auth.Read}, a.runEvents},

		{Route{Method: get, Pattern: Prefix + "/tokens", Action: auth.ManageTokens}, a.listTokens},
		{Route{Method: post, Pattern: Prefix + "/tokens", Action: auth.ManageTokens}, a.createToken},
		{Route{Method: del, Pattern: Prefix + "/tokens/{id}", Action: auth.ManageTokens}, a.revokeToken},

		{Route{Method: get, Pattern: Prefix + "/audit", Action: auth.ReadAudit}, a.listAudit},
		{Route{Method: get, Pattern: Prefix + "/audit/verify", Action: auth.ReadAudit}, a.verifyAudit},
		{Route{Method: get, Pattern: Prefix + "/audit/export", Action: auth.ReadAudit}, a.exportAudit},
	}
	for _, rt := range a.routes {
		a.known.Handle(rt.Method+" "+rt.Pattern, http.NotFoundHandler())
	}
	return a
}

// Routes lists every route (for the access-control walk and the OpenAPI
// check).
func (a *API) Routes() []Route {
	out := make([]Route, len(a.routes))
	for i, rt := range a.routes {
		out[i] = rt.Route
	}
	return out
}

// Register mounts the API's routes on mux, and a handler that answers
// unknown paths under /api/v1/ with a JSON 404 or 405.
func (a *API) Register(mux *http.ServeMux) {
	for _, rt := range a.routes {
		mux.Handle(rt.Method+" "+rt.Pattern, a.handler(rt))
	}
	mux.HandleFunc(Prefix+"/", a.unknownRoute)
	// Without its slash too: ServeMux would redirect it with an HTML body.
	mux.HandleFunc(Prefix, a.unknownRoute)
}

// handler wraps a route with authentication, CSRF and role checks.
func (a *API) handler(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Responses carry keys, tokens and query results: never cache them.
		w.Header().Set("Cache-Control", "no-store")
		if !rt.Public {
			p, err := a.authenticate(r, rt.Route)
			if err != nil {
				a.writeError(w, r, err)
				return
			}
			r = r.WithContext(auth.WithPrincipal(r.Context(), p))
			level := slog.LevelDebug
			if unsafeMethod(r.Method) {
				level = slog.LevelInfo // an audit trail of changes
			}
			a.log.Log(r.Context(), level, "api call", "method", r.Method, "route", rt.Pattern,
				"token_id", p.TokenID, "token_name", p.Name, "role", string(p.Role))
		}
		if err := rt.handle(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// unknownRoute answers a path under /api/v1/ that no route matches: 405
// with Allow when the path exists for other methods, else 404.
func (a *API) unknownRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := a.known.Handler(probe); pattern != "" {
			allowed = append(allowed, m)
			if m == http.MethodGet {
				// ServeMux answers HEAD with the GET route.
				allowed = append(allowed, http.MethodHead)
			}
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		a.writeError(w, r, &apiError{status: http.StatusMethodNotAllowed, code: CodeMethodNotAllowed,
			message: r.Method + " is not accepted on " + r.URL.Path + ": use " + strings.Join(allowed, " or ")})
		return
	}
	a.writeError(w, r, &apiError{status: http.StatusNotFound, code: CodeNotFound,
		message: "no API route " + r.URL.Path + "; the routes are listed in " + Prefix + "/openapi.json"})
}

func unsafeMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}
