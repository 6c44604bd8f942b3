// Package tracing sets up OpenTelemetry tracing for pgrelay from the
// standard OTEL_EXPORTER_OTLP_* environment variables: spans go to an
// OTLP/HTTP (protobuf) collector when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, and nowhere otherwise. The
// exporter is the OpenTelemetry SDK's (otlptracehttp), which also reads
// OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE and
// their _TRACES_ forms; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
// name the service.
//
// It also holds the attribute keys pgrelay's spans use. A span never
// carries a secret or SQL text: statements are identified by their digest
// (pg.Digest), commands by their program's name.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Scope is the instrumentation scope of pgrelay's spans.
const Scope = "github.com/pgrelay/pgrelay"

// Attribute keys of pgrelay's spans.
const (
	RunID          = attribute.Key("pgrelay.run.id")
	JobName        = attribute.Key("pgrelay.job.name")
	RunTrigger     = attribute.Key("pgrelay.run.trigger")
	RunAttempt     = attribute.Key("pgrelay.run.attempt")
	RunStatus      = attribute.Key("pgrelay.run.status")
	Connection     = attribute.Key("pgrelay.connection.name")
	StepIndex      = attribute.Key("pgrelay.step.index")
	StepKind       = attribute.Key("pgrelay.step.kind")
	StepStatus     = attribute.Key("pgrelay.step.status")
	Hop            = attribute.Key("pgrelay.ssh.hop")
	SSHUser        = attribute.Key("pgrelay.ssh.user")
	HostKey        = attribute.Key("pgrelay.ssh.host_key")
	KeyFingerprint = attribute.Key("pgrelay.ssh.key_fingerprint")
	StatementHash  = attribute.Key("db.query.digest")
	TestStep       = attribute.Key("pgrelay.test.step")
	TestStatus     = attribute.Key("pgrelay.test.status")
	TestSource     = attribute.Key("pgrelay.test.source")
	Program        = attribute.Key("process.executable.name")
	ExitCode       = attribute.Key("process.exit.code")
)

// Endpoint returns the OTLP endpoint the environment names for traces, or
// "" when tracing is off.
func Endpoint(getenv func(string) string) string {
	if e := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")); e != "" {
		return e
	}
	return strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

// RedactedEndpoint is Endpoint for logs: a password in the URL's user
// information (http://user:password@collector:4318) is replaced by xxxxx.
func RedactedEndpoint(getenv func(string) string) string {
	e := Endpoint(getenv)
	u, err := url.Parse(e)
	if err != nil {
		if strings.Contains(e, "@") {
			return "[an endpoint URL that does not parse, not shown: it may hold a password]"
		}
		return e
	}
	return u.Redacted()
}

// Provider is pgrelay's tracer provider: the SDK's, exporting to a
// collector, or a no-op one when tracing is off.
type Provider struct {
	trace.TracerProvider
	sdk *sdktrace.TracerProvider
}

// Enabled reports whether spans are exported.
func (p *Provider) Enabled() bool { return p.sdk != nil }

// Shutdown exports the spans still buffered and stops the exporter.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p.sdk == nil {
		return nil
	}
	return p.sdk.Shutdown(ctx)
}

// ForceFlush exports the spans buffered now.
func (p *Provider) ForceFlush(ctx context.Context) error {
	if p.sdk == nil {
		return nil
	}
	return p.sdk.ForceFlush(ctx)
}

// Off returns a provider whose spans go nowhere.
func Off() *Provider { return &Provider{TracerProvider: noop.NewTracerProvider()} }

// Options configures New.
type Options struct {
	// Getenv reads the environment (os.Getenv).
	Getenv func(string) string
	// Version is pgrelay's version, the resource's service.version.
	Version string
	// Exporter replaces the OTLP/HTTP exporter (tests); with it, tracing is
	// on whatever the environment says.
	Exporter sdktrace.SpanExporter
	// BatchTimeout is how long spans wait before they are sent; default
	// the SDK's (OTEL_BSP_SCHEDULE_DELAY, 5 s).
	BatchTimeout time.Duration
	// Logger receives failed exports (a collector down or refusing), as
	// pgrelay's own log lines in its format; nil leaves them to the
	// OpenTelemetry SDK, which prints them to stderr in a format of its
	// own (plain text in a JSON log).
	Logger *slog.Logger
}

// New returns the provider the environment asks for: exporting over
// OTLP/HTTP when an OTLP endpoint is set, else Off. Only the http/protobuf
// protocol is supported: OTEL_EXPORTER_OTLP_PROTOCOL=grpc is refused.
func New(ctx context.Context, o Options) (*Provider, error) {
	exp := o.Exporter
	if exp == nil {
		if Endpoint(o.Getenv) == "" {
			return Off(), nil
		}
		for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
			if p := strings.TrimSpace(o.Getenv(k)); p != "" && p != "http/protobuf" {
				return nil, fmt.Errorf("%s=%s is not supported: pgrelay exports traces over OTLP/HTTP with protobuf; set it to http/protobuf (or leave it unset) and point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (4318)", k, p)
			}
		}
		var err error
		if exp, err = otlptracehttp.New(ctx); err != nil {
			return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
		}
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceVersion(o.Version)))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	if res == nil {
		res = resource.Default()
	}
	if name := strings.TrimSpace(o.Getenv("OTEL_SERVICE_NAME")); name == "" {
		if r2, err := resource.Merge(res, resource.NewSchemaless(semconv.ServiceName("pgrelay"))); err == nil {
			res = r2
		}
	}
	if o.Logger != nil {
		exp = &loggedExporter{SpanExporter: exp, log: o.Logger}
	}
	var bopts []sdktrace.BatchSpanProcessorOption
	if o.BatchTimeout > 0 {
		bopts = append(bopts, sdktrace.WithBatchTimeout(o.BatchTimeout))
	}
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, bopts...), sdktrace.WithResource(res))
	return &Provider{TracerProvider: sdk, sdk: sdk}, nil
}

// loggedExporter reports its exporter's failures to a logger, and not to
// the SDK's process-wide error handler: the first failure of a series
// and then at most one a minute (with the count) while it lasts, and the
// first success after. The spans of a failed export are dropped, as the
// SDK does (the OTLP exporter has already retried them).
type loggedExporter struct {
	sdktrace.SpanExporter
	log *slog.Logger

	mu       sync.Mutex
	failed   int       // exports failed since the last success
	reported time.Time // when a failure was last logged
}

// logEvery is how often a series of failed exports is logged again.
const logEvery = time.Minute

// ExportSpans implements sdktrace.SpanExporter.
func (e *loggedExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		if e.failed > 0 {
			e.log.Info("tracing: exporting spans to the collector again", "failed_exports", e.failed)
			e.failed = 0
		}
		return nil
	}
	e.failed++
	if now := time.Now(); e.failed == 1 || now.Sub(e.reported) >= logEvery {
		e.reported = now
		e.log.Warn("tracing: could not export spans to the collector; they are dropped", "spans", len(spans),
			"failed_exports", e.failed, "error", err)
	}
	return nil
}

// Propagator is how a request's trace context is read (W3C traceparent).
func Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// Tracer returns pgrelay's tracer of tp; a nil tp is the no-op one.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return noop.NewTracerProvider().Tracer(Scope)
	}
	return tp.Tracer(Scope)
}

// Fail marks span as failed with a class of the error that is safe to
// export (no message: error messages can quote values).
func Fail(span trace.Span, class string) {
	span.SetStatus(codes.Error, class)
	span.SetAttributes(attribute.String("error.type", class))
}
