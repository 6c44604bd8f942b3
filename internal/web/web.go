// Package web is pgrelay's web UI: server-rendered pages (html/template),
// a little hand-written JavaScript, all assets embedded.
package web

import (
	"log/slog"
	"net/http"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
)

// Config configures the UI.
type Config struct {
	App      *app.Service
	Sessions *auth.Sessions
	Logger   *slog.Logger
	// SecureCookies sets the Secure flag on cookies (when serving HTTPS).
	SecureCookies bool
}

// UI is the web UI.
type UI struct {
	cfg Config
}

// New returns the UI.
func New(cfg Config) (*UI, error) { return &UI{cfg: cfg}, nil }

// Register mounts the UI's routes on mux.
func (u *UI) Register(mux *http.ServeMux) {}
