package cli_test

import (
	"strings"
	"testing"
)

// TestTracingEndpointLogWithoutPassword: the "tracing on" line names the
// collector it exports to, but not a password in the endpoint URL's user
// information (http://user:password@collector:4318), which would otherwise
// be in every log that keeps serve's stderr.
func TestTracingEndpointLogWithoutPassword(t *testing.T) {
	t.Parallel()
	const password = "OtlpPassw0rd-in-url"
	s := startServe(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:" + password + "@127.0.0.1:1"},
		"serve", "--listen", "127.0.0.1:0", "--log-level", "info")
	s.stop(t)
	logs := s.stderr.String()
	if !strings.Contains(logs, "tracing on") || !strings.Contains(logs, "127.0.0.1:1") {
		t.Fatalf("no \"tracing on\" line naming the collector:\n%s", logs)
	}
	if strings.Contains(logs, password) {
		t.Fatalf("the endpoint's password is in the log:\n%s", logs)
	}
}
