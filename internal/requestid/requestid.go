// Package requestid carries a request's ID, and the ID of the job run a
// process works on, in a context, and adds them to every log record
// written with that context (request_id, run_id).
package requestid

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"regexp"
)

// Header is the HTTP header that carries the request ID.
const Header = "X-Request-Id"

type key struct{}

type runKey struct{}

// WithRun returns ctx carrying the ID of the run it works on: the log
// records written with it (opening the run's tunnel, say) get run_id.
func WithRun(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, runKey{}, id)
}

// RunFrom returns the run ID in ctx, or "".
func RunFrom(ctx context.Context) string {
	id, _ := ctx.Value(runKey{}).(string)
	return id
}

// With returns ctx carrying id.
func With(ctx context.Context, id string) context.Context { return context.WithValue(ctx, key{}, id) }

// From returns the request ID in ctx, or "".
func From(ctx context.Context) string {
	id, _ := ctx.Value(key{}).(string)
	return id
}

var validRE = regexp.MustCompile(`^[A-Za-z0-9._-]{8,64}$`)

// New returns a fresh random request ID.
func New() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// FromHeader returns the incoming header value when it is a plausible ID
// (8-64 characters of [A-Za-z0-9._-]), else a fresh one.
func FromHeader(v string) string {
	if validRE.MatchString(v) {
		return v
	}
	return New()
}

// Handler is a slog.Handler that adds request_id and run_id from the
// record's context, run_id only to a record that has none of its own (as
// an attribute of the record or of the logger).
type Handler struct {
	slog.Handler
	// hasRun is set when the logger's attributes hold run_id.
	hasRun bool
}

// NewHandler wraps h.
func NewHandler(h slog.Handler) *Handler { return &Handler{Handler: h} }

// runAttr is the key of the run ID in log records.
const runAttr = "run_id"

// Handle adds request_id and run_id when the context has them.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if id := From(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	if id := RunFrom(ctx); id != "" && !h.hasRun && !recordHas(r, runAttr) {
		r.AddAttrs(slog.String(runAttr, id))
	}
	return h.Handler.Handle(ctx, r)
}

// recordHas reports whether r has an attribute named key at its top level.
func recordHas(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	hasRun := h.hasRun
	for _, a := range attrs {
		hasRun = hasRun || a.Key == runAttr
	}
	return &Handler{Handler: h.Handler.WithAttrs(attrs), hasRun: hasRun}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{Handler: h.Handler.WithGroup(name), hasRun: h.hasRun}
}
