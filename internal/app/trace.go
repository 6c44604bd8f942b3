package app

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/tracing"
)

// startSpan starts a span of the service's tracer.
func (s *Connector) startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return s.tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// endSpan ends span, failed with err's class when err is set.
func endSpan(span trace.Span, err error) {
	if err != nil {
		tracing.Fail(span, errorClass(err))
	}
	span.End()
}

// traceSteps wraps a test's progress so that each step becomes a span,
// child of ctx's span, from its start to its end.
func (s *Connector) traceSteps(ctx context.Context, progress func(diagnose.Step)) func(diagnose.Step) {
	return func(st diagnose.Step) {
		end := time.Now()
		start := end.Add(-time.Duration(st.DurationMS * float64(time.Millisecond)))
		_, span := s.tracer.Start(ctx, "test."+string(st.ID), trace.WithTimestamp(start),
			trace.WithAttributes(tracing.TestStep.String(string(st.ID)), tracing.TestStatus.String(string(st.Status))))
		if st.Status == diagnose.StatusFailed {
			tracing.Fail(span, "step "+string(st.ID))
		}
		span.End(trace.WithTimestamp(end))
		if progress != nil {
			progress(st)
		}
	}
}

// hopAttrs are a hop's span attributes.
func hopAttrs(n int, host string, port int, user string) []attribute.KeyValue {
	return []attribute.KeyValue{tracing.Hop.Int(n), attribute.String("server.address", host),
		attribute.Int("server.port", port), tracing.SSHUser.String(user)}
}
