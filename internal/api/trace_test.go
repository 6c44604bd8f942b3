package api_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/pg"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tracing"
	"github.com/pgrelay/pgrelay/internal/tracing/otlptest"
)

// TestTraces: with tracing on, a run through a real bastion arrives at an
// OTLP/HTTP receiver as one trace: River's work span, the run, the
// connection's open with the SSH dial of its hop, each step with its
// database connect and statement (by digest) or command (by program). A
// connection test has a span per step, and API requests are spans that
// continue the caller's trace. No span holds the password, the token or a
// SQL literal.
func TestTraces(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	recv := otlptest.Start(t)
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(recv.URL))
	if err != nil {
		t.Fatal(err)
	}
	tp, err := tracing.New(ctx, tracing.Options{Getenv: func(string) string { return "" }, Exporter: exp,
		BatchTimeout: 50 * time.Millisecond, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	pgsrv := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	password := "canary-pw-" + randomString(10)
	d := pgsrv.NewDatabase(t)
	d.SetPassword(t, password)
	bastion := testenv.SharedBastion(t, testenv.BastionOptions{})
	srv := apitest.Start(t, apitest.Options{Queue: true, AllowCommands: []string{"sh"}, TracerProvider: tp})
	admin := srv.AdminToken

	body := fmt.Sprintf(`{"name": "wh", "host": %q, "port": %d, "database": %q, "user": %q, "password": %q,
		"sslmode": "disable", "ssh_tunnel": {"host": %q, "port": %d, "user": %q}}`,
		pgsrv.Host, pgsrv.Port, d.Name, d.User, password, bastion.Host, bastion.Port, bastion.User)
	r := do(t, http.MethodPost, srv.URL+api.Prefix+"/connections", admin, "application/json", body)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	var created struct {
		SSHTunnel struct {
			PublicKey string `json:"public_key"`
		} `json:"ssh_tunnel"`
	}
	if err := json.Unmarshal([]byte(r.body), &created); err != nil {
		t.Fatal(err)
	}
	bastion.Authorize(t, created.SSHTunnel.PublicKey)

	literal := "canary-literal-" + randomString(8)
	sql := fmt.Sprintf("select '%s' as v, 42", literal)
	if _, _, err := srv.App.PutJob(ctx, jobs.Job{Name: "nightly", Connection: "wh", Steps: []jobs.Step{
		{SQL: sql}, {Command: []string{"sh", "-c", "psql --version >/dev/null 2>&1; exit 0"}}}}); err != nil {
		t.Fatal(err)
	}

	// The caller's trace continues in the request's span.
	callerTrace := "4bf92f3577b34da6a3ce929d0e0e4736"
	traceparent := func(req *http.Request) { req.Header.Set("traceparent", "00-"+callerTrace+"-00f067aa0ba902b7-01") }
	r = do(t, http.MethodPost, srv.URL+api.Prefix+"/jobs/nightly/runs", admin, "application/json", "", traceparent)
	if r.status != http.StatusAccepted && r.status != http.StatusCreated {
		t.Fatalf("run: %d %s", r.status, r.body)
	}
	var run jobs.Run
	if err := json.Unmarshal([]byte(r.body), &run); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		cur, err := srv.App.GetRun(ctx, run.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Status.Terminal() {
			if cur.Status != jobs.Succeeded {
				t.Fatalf("run %s: %s", cur.Status, cur.Reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run did not end in 60 s")
		}
	}
	if r := do(t, http.MethodPost, srv.URL+api.Prefix+"/connections/wh/test", admin, "", ""); r.status != http.StatusOK {
		t.Fatalf("test: %d %s", r.status, r.body)
	}
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}

	runSpan := recv.Wait(t, 10*time.Second, "run", func(s *tracepb.Span) bool {
		return s.GetName() == "run" && otlptest.Attr(s, "pgrelay.run.id") == run.ID
	})
	spans := recv.Spans()
	byID := map[string]*tracepb.Span{}
	for _, s := range spans {
		byID[hex.EncodeToString(s.GetSpanId())] = s
	}
	children := func(parent *tracepb.Span, name string) []*tracepb.Span {
		var out []*tracepb.Span
		for _, s := range spans {
			if hex.EncodeToString(s.GetParentSpanId()) == hex.EncodeToString(parent.GetSpanId()) &&
				string(s.GetTraceId()) == string(parent.GetTraceId()) && (name == "" || s.GetName() == name) {
				out = append(out, s)
			}
		}
		return out
	}
	one := func(parent *tracepb.Span, name string) *tracepb.Span {
		t.Helper()
		cs := children(parent, name)
		if len(cs) != 1 {
			var all []string
			for _, c := range children(parent, "") {
				all = append(all, c.GetName())
			}
			t.Fatalf("%s has %d %q children, want 1 (children: %v)", parent.GetName(), len(cs), name, all)
		}
		return cs[0]
	}
	wantAttr := func(s *tracepb.Span, key, want string) {
		t.Helper()
		if got := otlptest.Attr(s, key); got != want {
			t.Errorf("span %s: %s = %q, want %q", s.GetName(), key, got, want)
		}
	}

	// The run's trace: River's work span is its root.
	work := byID[hex.EncodeToString(runSpan.GetParentSpanId())]
	if work == nil || work.GetName() != "river.work/pgrelay_run" || len(work.GetParentSpanId()) != 0 {
		t.Fatalf("the run's parent: %v", work)
	}
	if len(work.GetLinks()) != 1 || hex.EncodeToString(work.GetLinks()[0].GetTraceId()) != callerTrace {
		t.Errorf("the work span does not link to the request that queued the run: %v", work.GetLinks())
	}
	wantAttr(runSpan, "pgrelay.job.name", "nightly")
	wantAttr(runSpan, "pgrelay.connection.name", "wh")
	wantAttr(runSpan, "pgrelay.run.status", "succeeded")
	open := one(runSpan, "connection.open")
	wantAttr(open, "pgrelay.connection.name", "wh")
	dial := one(open, "ssh.dial")
	wantAttr(dial, "pgrelay.ssh.hop", "1")
	wantAttr(dial, "server.address", bastion.Host)
	wantAttr(dial, "server.port", fmt.Sprint(bastion.Port))
	if otlptest.Attr(dial, "pgrelay.ssh.host_key") == "" || otlptest.Attr(dial, "pgrelay.ssh.key_fingerprint") == "" {
		t.Errorf("ssh.dial without the host key and the key fingerprint")
	}
	step1 := one(runSpan, "step 1")
	wantAttr(step1, "pgrelay.step.kind", "sql")
	connect := one(step1, "db.connect")
	wantAttr(connect, "db.system.name", "postgresql")
	stmt := one(step1, "db.statement")
	wantAttr(stmt, "db.query.digest", pg.Digest(sql))
	step2 := one(runSpan, "step 2")
	cmd := one(step2, "command")
	wantAttr(cmd, "process.executable.name", "sh")
	wantAttr(cmd, "process.exit.code", "0")
	for _, s := range []*tracepb.Span{open, dial, step1, connect, stmt, step2, cmd} {
		if s.GetStartTimeUnixNano() < runSpan.GetStartTimeUnixNano() || s.GetEndTimeUnixNano() > runSpan.GetEndTimeUnixNano() {
			t.Errorf("span %s is outside the run's time", s.GetName())
		}
	}

	// The request that queued the run, in the caller's trace.
	req := recv.Wait(t, 5*time.Second, "request", func(s *tracepb.Span) bool {
		return s.GetName() == "POST /api/v1/jobs/{name}/runs"
	})
	if hex.EncodeToString(req.GetTraceId()) != callerTrace || otlptest.Attr(req, "http.response.status_code") != fmt.Sprint(r.status) {
		t.Errorf("request span: trace %x, status %s", req.GetTraceId(), otlptest.Attr(req, "http.response.status_code"))
	}
	// The connection test: a span per step under the request's.
	testReq := recv.Wait(t, 5*time.Second, "test request", func(s *tracepb.Span) bool {
		return s.GetName() == "POST /api/v1/connections/{name}/test"
	})
	test := one(testReq, "connection.test")
	var steps []string
	for _, s := range children(test, "") {
		if strings.HasPrefix(s.GetName(), "test.") {
			steps = append(steps, otlptest.Attr(s, "pgrelay.test.step")+"="+otlptest.Attr(s, "pgrelay.test.status"))
		}
	}
	if len(steps) < 5 || !strings.Contains(strings.Join(steps, " "), "ssh_auth=ok") || !strings.Contains(strings.Join(steps, " "), "query=ok") {
		t.Errorf("test step spans: %v", steps)
	}

	// Nothing secret and no SQL text anywhere in what was exported.
	for _, raw := range recv.Raw() {
		for what, leak := range map[string]string{"password": password, "SQL literal": literal, "token": admin, "SQL text": "select '"} {
			if strings.Contains(raw, leak) {
				t.Fatalf("the %s is in the exported spans", what)
			}
		}
	}
}
