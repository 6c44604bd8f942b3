package cli_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
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

// TestTracingExportFailureInServeLog: spans that cannot reach the
// collector (nothing listens on its port) are reported in serve's own log,
// as a JSON line with --log-format json, not by the OpenTelemetry SDK's
// default handler, which printed plain text to the process's stderr in
// the middle of a JSON log.
func TestTracingExportFailureInServeLog(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	s := startServe(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + closed, "OTEL_EXPORTER_OTLP_TIMEOUT": "300"},
		"serve", "--listen", "127.0.0.1:0", "--log-format", "json")
	// A request makes a span; stopping flushes it to the collector.
	res, err := http.Get(s.url + "/api/v1/whoami")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	s.stop(t)
	logs := s.stderr.String()
	found := false
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a log line is not JSON: %q\n%s", line, logs)
		}
		if rec["level"] == "WARN" && strings.Contains(fmt.Sprint(rec["msg"]), "could not export spans") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no warning that spans could not be exported:\n%s", logs)
	}
}
