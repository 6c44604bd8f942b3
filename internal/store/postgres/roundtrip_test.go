package postgres_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/store/storetest"
)

// TestCopyRoundTrip copies a SQLite store with records of every kind to
// PostgreSQL and back to SQLite (as `store copy` does): every record and
// field arrives unchanged at each step, the audit chain verifies, and new
// records written to each copy continue its sequences (a new audit record,
// run log line, run backend and health entry) without colliding.
func TestCopyRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := startServer(t)
	openSQLite := func(t *testing.T) *sqlite.Store {
		s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), sqlite.FileName))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	copyStore := func(t *testing.T, from, to store.Store) {
		t.Helper()
		if err := to.Import(ctx, func(w store.RecordWriter) error { return from.Export(ctx, w) }); err != nil {
			t.Fatalf("copy: %v", err)
		}
	}
	src := openSQLite(t)
	storetest.Fill(t, src)
	want := storetest.Read(t, src)

	pg := srv.open(t)
	copyStore(t, src, pg)
	if err := storetest.Equal(want, storetest.Read(t, pg)); err != nil {
		t.Fatalf("SQLite → PostgreSQL: %v", err)
	}
	back := openSQLite(t)
	copyStore(t, pg, back)
	if err := storetest.Equal(want, storetest.Read(t, back)); err != nil {
		t.Fatalf("SQLite → PostgreSQL → SQLite: %v", err)
	}

	for name, s := range map[string]store.Store{"postgres": pg, "sqlite": back} {
		if v, err := audit.Verify(ctx, s); err != nil || !v.OK {
			t.Fatalf("%s: audit chain of the copy: %+v %v", name, v, err)
		}
		now := time.Now().UTC()
		if err := s.AppendAudit(ctx, &audit.Record{Time: now, Actor: audit.Actor{Kind: audit.ActorToken, ID: "tok1", Name: "admin"},
			Action: "token.create", TargetKind: audit.TargetConnection, Target: "alpha", Outcome: audit.OK}); err != nil {
			t.Fatalf("%s: audit record after the copy: %v", name, err)
		}
		recs, err := s.AuditAfter(ctx, want.AuditChain.HeadSeq, 10)
		if err != nil || len(recs) != 1 || recs[0].Seq != want.AuditChain.HeadSeq+1 {
			t.Fatalf("%s: new audit record: %+v %v, want seq %d", name, recs, err, want.AuditChain.HeadSeq+1)
		}
		if v, err := audit.Verify(ctx, s); err != nil || !v.OK {
			t.Fatalf("%s: audit chain after a new record: %+v %v", name, v, err)
		}
		run := &jobs.Run{ID: "run-new", JobName: "nightly", Job: want.Runs[0].Job, Trigger: jobs.Manual, Status: jobs.Running, QueuedAt: now}
		if err := s.CreateRun(ctx, run); err != nil {
			t.Fatalf("%s: new run: %v", name, err)
		}
		if err := s.AppendRunLog(ctx, "run-0007", []jobs.LogLine{{Time: now, Stream: "stdout", Text: "after"}}); err != nil {
			t.Fatalf("%s: log line after the copy: %v", name, err)
		}
		for _, id := range []string{"run-new", "run-0001"} {
			if err := s.AddRunBackend(ctx, id, jobs.Backend{PID: 1, SecretKey: []byte{1}, User: "u", Database: "d", OpenedAt: now}); err != nil {
				t.Fatalf("%s: backend of %s after the copy: %v", name, id, err)
			}
		}
		if bs, err := s.RunBackends(ctx, "run-0001"); err != nil || len(bs) != len(want.Backends["run-0001"])+1 {
			t.Fatalf("%s: backends of run-0001: %+v %v", name, bs, err)
		}
		c := want.Connections[0]
		if err := s.AddConnectionCheck(ctx, c.ID, store.ConnectionCheck{Kind: store.CheckTest, At: now, OK: true, Source: "manual"}, 10); err != nil {
			t.Fatalf("%s: health entry after the copy: %v", name, err)
		}
		cs, err := s.ConnectionChecks(ctx, c.ID, 100)
		if err != nil || len(cs) != len(want.Checks[c.ID])+1 {
			t.Fatalf("%s: health entries: %+v %v", name, cs, err)
		}
	}
}
