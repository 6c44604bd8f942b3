package tracing_test

import (
	"context"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/pgrelay/pgrelay/internal/tracing"
	"github.com/pgrelay/pgrelay/internal/tracing/otlptest"
)

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

// TestFromEnvironment: tracing is off without an OTLP endpoint, exports to
// OTEL_EXPORTER_OTLP_ENDPOINT (or the _TRACES_ one) when set, and refuses
// the gRPC protocol with what to set instead.
func TestFromEnvironment(t *testing.T) {
	ctx := context.Background()
	p, err := tracing.New(ctx, tracing.Options{Getenv: env(nil)})
	if err != nil || p.Enabled() {
		t.Fatalf("without an endpoint: %v %v", p.Enabled(), err)
	}
	recv := otlptest.Start(t)
	base := strings.TrimSuffix(recv.URL, "/v1/traces")
	// The SDK's exporter reads the process environment itself.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)
	t.Setenv("OTEL_SERVICE_NAME", "pgrelay-test")
	p, err = tracing.New(ctx, tracing.Options{Getenv: env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": base,
		"OTEL_SERVICE_NAME": "pgrelay-test"}), Version: "v9"})
	if err != nil || !p.Enabled() {
		t.Fatalf("with an endpoint: %v %v", p.Enabled(), err)
	}
	_, span := tracing.Tracer(p).Start(ctx, "hello")
	span.End()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	recv.Wait(t, 5*time.Second, "hello", func(s *tracepb.Span) bool { return s.GetName() == "hello" })
	if raw := strings.Join(recv.Raw(), ""); !strings.Contains(raw, "pgrelay-test") || !strings.Contains(raw, "v9") {
		t.Fatalf("resource without the service name and version: %s", raw)
	}
	_, err = tracing.New(ctx, tracing.Options{Getenv: env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": base,
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})})
	if err == nil || !strings.Contains(err.Error(), "http/protobuf") {
		t.Fatalf("grpc: %v", err)
	}
}
