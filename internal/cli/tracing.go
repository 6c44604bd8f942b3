package cli

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pgrelay/pgrelay/internal/tracing"
)

// traceProvider returns the tracer provider the OTEL_EXPORTER_OTLP_*
// environment asks for (made once per command), or nil when tracing is
// off.
func (r *runner) traceProvider(ctx context.Context) (trace.TracerProvider, error) {
	if r.traces == nil {
		p, err := tracing.New(ctx, tracing.Options{Getenv: r.env.Getenv, Version: Version, Logger: r.logger})
		if err != nil {
			return nil, usageError{err}
		}
		r.traces = p
		if p.Enabled() {
			r.logger.Info("tracing on", "endpoint", tracing.RedactedEndpoint(r.env.Getenv))
		}
	}
	if !r.traces.Enabled() {
		return nil, nil
	}
	return r.traces, nil
}

// tracesOrNil is the tracer provider made by traceProvider, or nil when
// tracing is off.
func (r *runner) tracesOrNil() trace.TracerProvider {
	if r.traces == nil || !r.traces.Enabled() {
		return nil
	}
	return r.traces
}

// closeTracing sends the spans still buffered, within a few seconds.
func (r *runner) closeTracing() {
	if r.traces == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.traces.Shutdown(ctx); err != nil && r.logger != nil {
		r.logger.Warn("tracing: could not send the last spans", "error", err)
	}
}
