// Package api is pgrelay's REST API under /api/v1: JSON in and out,
// snake_case, every route checked against the caller's role.
package api

import (
	"log/slog"
	"net/http"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/metrics"
)

// Config configures the API.
type Config struct {
	App      *app.Service
	Sessions *auth.Sessions
	Metrics  *metrics.Metrics
	Logger   *slog.Logger
}

// API is the REST API.
type API struct {
	cfg Config
}

// Route is one API route and the action it requires.
type Route struct {
	Method  string
	Pattern string
	Action  auth.Action
}

// New returns the API.
func New(cfg Config) *API { return &API{cfg: cfg} }

// Routes lists every route (for the access-control walk and the OpenAPI
// check).
func (a *API) Routes() []Route { return nil }

// Register mounts the API's routes on mux.
func (a *API) Register(mux *http.ServeMux) {}
