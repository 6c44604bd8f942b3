package app_test

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tracing"
)

// TestRunCleanupInTheRunsTrace: what a run does on the server after it
// stopped (the session that cancels a cancelled run's statement; after
// its tunnel dropped, the connection opened again, with its SSH dial, to
// stop them) is in the run's trace, under the run's span: the trace has
// one root, and no span of it is left open.
func TestRunCleanupInTheRunsTrace(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{})
	for _, stop := range []string{"cancel", "drop"} {
		t.Run(stop, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			f := newServiceWith(t, func(c *app.Config) { c.TracerProvider = tp })
			ctx := context.Background()
			v, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "c", Host: pg.Host, Port: pg.Port, Database: db.Name,
				User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
				Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User,
					KeepaliveInterval: connection.Duration(200 * time.Millisecond), KeepaliveCountMax: 3}})
			if err != nil {
				t.Fatal(err)
			}
			b.Authorize(t, v.SSHTunnel.PublicKey)
			cleaned := make(chan jobs.Cleanup, 1)
			// As pgrelay serve's queue runs them: a cleanup after a drop
			// goes on in the background.
			r := &jobs.Runner{Open: f.svc.OpenConn, Tracer: tracing.Tracer(tp), StopGrace: 5 * time.Second}
			rctx, cancel := context.WithCancelCause(ctx)
			defer cancel(nil)
			rctx, root := tracing.Tracer(tp).Start(rctx, "run")
			running, stopped := make(chan struct{}, 1), make(chan struct{})
			hooks := jobs.Hooks{
				Backend: func(jobs.Backend) { running <- struct{}{} },
				Cleanup: func(c jobs.Cleanup) { cleaned <- c },
			}
			go func() {
				defer close(stopped)
				<-running
				time.Sleep(500 * time.Millisecond) // the statement is on the server
				if stop == "cancel" {
					cancel(&jobs.CancelledError{Reason: "test"})
				} else {
					b.Kill(t)
				}
			}()
			res := r.Run(rctx, jobs.Job{Name: "j", Connection: "c", Timeout: connection.Duration(time.Minute),
				Steps: []jobs.Step{{SQL: "select pg_sleep(60)"}}}, hooks)
			root.End()
			<-stopped
			if stop == "drop" {
				if res.Status != jobs.Failed || res.Cleanup == nil || res.Cleanup.Status != jobs.CleanupPending {
					t.Fatalf("run: %s %v, cleanup %+v; want failed with a pending cleanup", res.Status, res.Err, res.Cleanup)
				}
				b.Start(t)
				select {
				case c := <-cleaned:
					if c.Status != jobs.CleanupDone {
						t.Fatalf("cleanup after the bastion came back: %+v", c)
					}
				case <-time.After(60 * time.Second):
					t.Fatal("no cleanup in 60 s after the bastion came back")
				}
			} else if res.Status != jobs.Cancelled || res.Cleanup == nil || res.Cleanup.Status != jobs.CleanupDone {
				t.Fatalf("run: %s %v, cleanup %+v; want cancelled with its statement stopped", res.Status, res.Err, res.Cleanup)
			}

			if started, ended := len(rec.Started()), len(rec.Ended()); started != ended {
				t.Errorf("%d spans started, %d ended", started, ended)
			}
			ids := map[string]bool{}
			for _, s := range rec.Ended() {
				ids[s.SpanContext().SpanID().String()] = true
			}
			want := map[string]int{"connection.open": 1, "ssh.dial": 1, "db.connect": 2}
			if stop == "drop" {
				want = map[string]int{"connection.open": 2, "ssh.dial": 2, "db.connect": 2}
			}
			got := map[string]int{}
			for _, s := range rec.Ended() {
				if s.SpanContext().TraceID() != root.SpanContext().TraceID() {
					t.Errorf("span %s is in trace %s, not the run's %s", s.Name(), s.SpanContext().TraceID(), root.SpanContext().TraceID())
					continue
				}
				if s.Name() != "run" && !ids[s.Parent().SpanID().String()] {
					t.Errorf("span %s has no parent in the run's trace", s.Name())
				}
				got[s.Name()]++
			}
			for name, n := range want {
				if got[name] != n {
					t.Errorf("%d %s spans in the run's trace, want %d", got[name], name, n)
				}
			}
		})
	}
}
