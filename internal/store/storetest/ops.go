package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// Fill saves records of every kind, with every field set, into s: meta
// values, connections (with sealed bytes, pins and a pending host key),
// tokens (used, revoked), jobs, and more runs (in every status) and log
// lines than one page of an export. Times have microsecond precision, the
// finest both backends keep. A test that adds a field or a table to the
// store sets it here, so that copies are checked to carry it.
func Fill(t testing.TB, s store.Store) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	if _, err := s.PutMetaIfAbsent(ctx, "key_check", []byte{1, 0, 2, 255}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutMetaIfAbsent(ctx, "other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutMetaIfAbsent(ctx, "ssh_user_ca", []byte{7, 0, 7, 255}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutMetaIfAbsent(ctx, "ssh_user_ca_principals", []byte(`{"principals":["dbtcloud","etl"]}`)); err != nil {
		t.Fatal(err)
	}
	a := sampleConnection("alpha")
	b := sampleConnection("beta")
	b.Spec.Tunnel, b.SSHPublicKey, b.SealedPrivateKey, b.PreviousPublicKey = nil, "", nil, ""
	b.HostKeys, b.HostKeysAddr, b.PendingHostKey, b.PendingHostKeySeen = nil, "", "", time.Time{}
	b.HopHostKeys, b.PendingPublicKey, b.SealedPendingPrivateKey, b.KeyRotation = nil, "", nil, store.KeyRotation{}
	b.HopKeys = nil
	for _, c := range []*store.Connection{a, b} {
		if err := s.CreateConnection(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	a.Spec.Threads = 3
	if err := s.UpdateConnection(ctx, a); err != nil { // version 2
		t.Fatal(err)
	}
	if err := s.MarkKeyUsed(ctx, a.ID, "SHA256:abc dbtcloud@bastion.example.com:22", now); err != nil {
		t.Fatal(err)
	}
	toks := []*store.Token{
		{ID: "tok1", Name: "admin", Role: "admin", Hash: "h1", CreatedAt: now, LastUsedAt: now.Add(time.Minute)},
		{ID: "tok2", Name: "ci", Role: "editor", Hash: "h2", CreatedAt: now.Add(time.Second), RevokedAt: now.Add(time.Hour)},
		{ID: "tok3", Name: "ci", Role: "viewer", Hash: "h3", CreatedAt: now.Add(2 * time.Second)},
	}
	for _, tk := range toks {
		if err := s.CreateToken(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateJob(ctx, sampleJob("nightly"), now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutJob(ctx, sampleJob("nightly"), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateJob(ctx, sampleJob("hourly"), now); err != nil {
		t.Fatal(err)
	}
	statuses := []jobs.Status{jobs.Succeeded, jobs.Failed, jobs.Cancelled, jobs.Queued, jobs.Running}
	for i := range 510 {
		r := &jobs.Run{ID: fmt.Sprintf("run-%04d", i), JobName: "nightly", Job: *sampleJob("nightly"), Trigger: jobs.Schedule,
			Status: statuses[i%len(statuses)], QueuedAt: now.Add(time.Duration(i) * time.Second)}
		if err := s.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		if i%len(statuses) < 3 {
			code := i
			start, end := r.QueuedAt.Add(time.Second), r.QueuedAt.Add(2*time.Second)
			r.StartedAt, r.EndedAt, r.HeartbeatAt = &start, &end, &end
			r.Worker, r.Attempt, r.Reason, r.CancelRequested = "host:1", 1, "reason "+r.ID, i%2 == 0
			r.Steps = []jobs.RunStep{{Index: 0, Label: "step", Kind: "sql", Status: r.Status, ExitCode: &code,
				StartedAt: &start, EndedAt: &end, DurationMS: 1000, Error: "e"}}
			if err := s.UpdateRun(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		n := 1
		if i == 7 {
			n = 1203 // more than a page of an export
		}
		lines := make([]jobs.LogLine, n)
		for k := range lines {
			lines[k] = jobs.LogLine{Time: now.Add(time.Duration(k) * time.Millisecond), Stream: "stdout", Step: k % 3,
				Text: fmt.Sprintf("line %d of %s \x00\xff", k, r.ID)}
		}
		if err := s.AppendRunLog(ctx, r.ID, lines); err != nil {
			t.Fatal(err)
		}
		if i%4 == 1 {
			// A stopped run's database sessions and their cleanup.
			for k := range 2 {
				b := jobs.Backend{PID: uint32(4000 + 10*i + k), SecretKey: []byte{byte(i), byte(k), 0, 255}, Step: k,
					User: "dbt", Database: "analytics", OpenedAt: now.Add(time.Duration(k) * time.Second)}
				if err := s.AddRunBackend(ctx, r.ID, b); err != nil {
					t.Fatal(err)
				}
			}
			c := &jobs.Cleanup{Status: jobs.CleanupDone, Cancelled: []uint32{uint32(4000 + 10*i)}, Idle: []uint32{uint32(4001 + 10*i)},
				Attempts: 1, UpdatedAt: now, RunAttempt: 1}
			c.Summarize()
			if _, err := s.PutRunCleanup(ctx, r.ID, c); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Health entries of both connections.
	for i := range 3 {
		for _, c := range []*store.Connection{a, b} {
			if err := s.AddConnectionCheck(ctx, c.ID, store.ConnectionCheck{Kind: []string{store.CheckTest, store.CheckRun, store.CheckUse}[i],
				At: now.Add(time.Duration(i) * time.Second), OK: i != 1, Source: "manual", Step: "s", Detail: "d " + c.Spec.Name,
				DurationMS: int64(i)}, 10); err != nil {
				t.Fatal(err)
			}
		}
	}
	// More audit records than a page of an export, the oldest pruned so
	// that the chain has an anchor.
	for i := range 505 {
		appendAudit(t, s, sampleAudit(i, now.Add(time.Duration(i)*time.Millisecond)))
	}
	if n, err := s.PruneAudit(ctx, now.Add(3*time.Millisecond), 100); err != nil || n != 3 {
		t.Fatalf("prune audit: %d %v", n, err)
	}
}

// Dump is every record of a store, read through the Store methods.
type Dump struct {
	Meta        map[string][]byte
	Connections []*store.Connection
	Tokens      []*store.Token
	Jobs        []*store.JobRecord
	Runs        []*jobs.Run
	Logs        map[string][]jobs.LogLine
	Backends    map[string][]jobs.Backend
	Cleanups    map[string]*jobs.Cleanup
	Checks      map[string][]store.ConnectionCheck
	Audit       []audit.Record
	AuditChain  audit.Chain
	Counts      store.Counts
}

// Read returns every record of s (meta: the keys Fill sets).
func Read(t testing.TB, s store.Store) *Dump {
	t.Helper()
	ctx := context.Background()
	d := &Dump{Meta: map[string][]byte{}, Logs: map[string][]jobs.LogLine{}, Backends: map[string][]jobs.Backend{},
		Cleanups: map[string]*jobs.Cleanup{}}
	for _, k := range []string{"key_check", "other", "ssh_user_ca", "ssh_user_ca_principals"} {
		v, err := s.GetMeta(ctx, k)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		d.Meta[k] = v
	}
	var err error
	if d.Connections, err = s.ListConnections(ctx); err != nil {
		t.Fatal(err)
	}
	if d.Tokens, err = s.ListTokens(ctx); err != nil {
		t.Fatal(err)
	}
	if d.Jobs, err = s.ListJobs(ctx); err != nil {
		t.Fatal(err)
	}
	if d.Runs, err = s.ListRuns(ctx, store.RunFilter{Limit: 100000}); err != nil {
		t.Fatal(err)
	}
	for _, r := range d.Runs {
		if d.Logs[r.ID], err = s.RunLog(ctx, r.ID, 0, 100000); err != nil {
			t.Fatal(err)
		}
		if d.Backends[r.ID], err = s.RunBackends(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		if d.Cleanups[r.ID], err = s.RunCleanup(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
	}
	if d.Checks, err = s.RecentChecks(ctx, 1000); err != nil {
		t.Fatal(err)
	}
	if d.Audit, err = s.AuditAfter(ctx, 0, 100000); err != nil {
		t.Fatal(err)
	}
	if d.AuditChain, err = s.AuditChain(ctx); err != nil {
		t.Fatal(err)
	}
	if d.Counts, err = s.Counts(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

// Equal reports how two dumps differ (nil when they do not), comparing
// times as instants.
func Equal(want, got *Dump) error {
	w, g := normDump(want), normDump(got)
	if !reflect.DeepEqual(w.Meta, g.Meta) {
		return fmt.Errorf("meta differs: %v, want %v", g.Meta, w.Meta)
	}
	if len(w.Connections) != len(g.Connections) {
		return fmt.Errorf("%d connections, want %d", len(g.Connections), len(w.Connections))
	}
	for i := range w.Connections {
		if err := equal(w.Connections[i], g.Connections[i]); err != nil {
			return fmt.Errorf("connection %s: %w", w.Connections[i].Spec.Name, err)
		}
	}
	for _, c := range []struct {
		what      string
		want, got any
	}{{"tokens", w.Tokens, g.Tokens}, {"jobs", w.Jobs, g.Jobs}, {"runs", w.Runs, g.Runs}, {"logs", w.Logs, g.Logs},
		{"backends", w.Backends, g.Backends}, {"cleanups", w.Cleanups, g.Cleanups}, {"audit", w.Audit, g.Audit}, {"checks", w.Checks, g.Checks},
		{"audit chain", w.AuditChain, g.AuditChain}, {"counts", w.Counts, g.Counts}} {
		if !reflect.DeepEqual(c.want, c.got) {
			return fmt.Errorf("%s differ:\n got %+v\nwant %+v", c.what, brief(c.got), brief(c.want))
		}
	}
	return nil
}

func brief(v any) string {
	s := fmt.Sprintf("%+v", v)
	if len(s) > 2000 {
		s = s[:2000] + "..."
	}
	return s
}

// normDump puts times in UTC (so that DeepEqual compares instants).
func normDump(d *Dump) *Dump {
	u := func(t time.Time) time.Time { return t.UTC() }
	up := func(t *time.Time) *time.Time {
		if t == nil {
			return nil
		}
		x := t.UTC()
		return &x
	}
	out := *d
	out.Tokens = nil
	for _, t := range d.Tokens {
		tt := *t
		tt.CreatedAt, tt.LastUsedAt, tt.RevokedAt = u(t.CreatedAt), u(t.LastUsedAt), u(t.RevokedAt)
		out.Tokens = append(out.Tokens, &tt)
	}
	out.Jobs = nil
	for _, j := range d.Jobs {
		jj := *j
		jj.CreatedAt, jj.UpdatedAt = u(j.CreatedAt), u(j.UpdatedAt)
		out.Jobs = append(out.Jobs, &jj)
	}
	out.Runs = nil
	for _, r := range d.Runs {
		rr := *r
		rr.QueuedAt, rr.StartedAt, rr.EndedAt, rr.HeartbeatAt = u(r.QueuedAt), up(r.StartedAt), up(r.EndedAt), up(r.HeartbeatAt)
		rr.Steps = nil
		for _, st := range r.Steps {
			st.StartedAt, st.EndedAt = up(st.StartedAt), up(st.EndedAt)
			rr.Steps = append(rr.Steps, st)
		}
		out.Runs = append(out.Runs, &rr)
	}
	out.Logs = map[string][]jobs.LogLine{}
	for id, ls := range d.Logs {
		var nl []jobs.LogLine
		for _, l := range ls {
			l.Time = u(l.Time)
			nl = append(nl, l)
		}
		out.Logs[id] = nl
	}
	return &out
}

func exerciseTransfer(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := context.Background()
	src := open(t)
	Fill(t, src)
	want := Read(t, src)
	if want.Counts != (store.Counts{Connections: 2, Tokens: 3, Jobs: 2, Runs: 510, RunLogLines: 509 + 1203, AuditRecords: 502}) {
		t.Fatalf("counts of the filled store: %+v", want.Counts)
	}
	dst := open(t)
	if c, err := dst.Counts(ctx); err != nil || !c.Empty() {
		t.Fatalf("counts of a new store: %+v %v", c, err)
	}
	err := dst.Import(ctx, func(w store.RecordWriter) error {
		if err := src.Export(ctx, w); err != nil {
			return err
		}
		c, err := w.Counts(ctx)
		if err != nil || c != want.Counts {
			return fmt.Errorf("counts inside the import: %+v %v, want %+v", c, err, want.Counts)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	if err := Equal(want, Read(t, dst)); err != nil {
		t.Fatalf("copy differs from its source: %v", err)
	}
	if v := verify(t, dst); !v.OK || v.Records != 502 || v.Chain.AnchorSeq != 3 {
		t.Fatalf("the copy's audit chain: %+v", v)
	}
	if err := Equal(want, Read(t, src)); err != nil {
		t.Fatalf("the source changed: %v", err)
	}

	// The copy goes on where the source left off: log Seqs, versions.
	if err := dst.AppendRunLog(ctx, "run-0007", []jobs.LogLine{{Time: time.Now(), Stream: "stdout", Text: "after"}}); err != nil {
		t.Fatal(err)
	}
	if l, err := dst.RunLog(ctx, "run-0007", 1203, 10); err != nil || len(l) != 1 || l[0].Seq != 1204 {
		t.Fatalf("line appended to a copied run: %+v %v, want seq 1204", l, err)
	}
	c, err := dst.GetConnection(ctx, "alpha")
	if err != nil || c.Version != 2 {
		t.Fatalf("copied connection: %+v %v, want version 2", c, err)
	}
	stale := *c
	stale.Version = 1
	if err := dst.UpdateConnection(ctx, &stale); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("update of a copied connection at an old version: %v, want ErrConflict", err)
	}

	// Copying again: every record is there already; nothing is written.
	before := Read(t, dst)
	err = dst.Import(ctx, func(w store.RecordWriter) error { return src.Export(ctx, w) })
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("second copy: %v, want ErrExists", err)
	}
	if err := Equal(before, Read(t, dst)); err != nil {
		t.Fatalf("a failed copy changed the target: %v", err)
	}
	// A fill that fails writes nothing.
	empty := open(t)
	boom := errors.New("boom")
	err = empty.Import(ctx, func(w store.RecordWriter) error {
		if err := src.Export(ctx, w); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failed import: %v", err)
	}
	if c, err := empty.Counts(ctx); err != nil || !c.Empty() {
		t.Fatalf("after a failed import: %+v %v, want nothing", c, err)
	}
}

func exerciseSecrets(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := sampleConnection("alpha")
	if err := s.CreateConnection(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetMeta(ctx, "key_check"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing meta: %v, want ErrNotFound", err)
	}
	if _, err := s.PutMetaIfAbsent(ctx, "key_check", []byte("old")); err != nil {
		t.Fatal(err)
	}
	// A failing transaction changes nothing.
	boom := errors.New("boom")
	err := s.WithSecrets(ctx, func(tx store.SecretsTx) error {
		cs, err := tx.ListConnections(ctx)
		if err != nil || len(cs) != 1 {
			return fmt.Errorf("list: %v %v", cs, err)
		}
		if err := tx.SetConnectionSecrets(ctx, cs[0].ID, []byte("p2"), []byte("k2")); err != nil {
			return err
		}
		if err := tx.PutMeta(ctx, "key_check", []byte("new")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failed transaction: %v", err)
	}
	got, _ := s.GetConnection(ctx, "alpha")
	if m, _ := s.GetMeta(ctx, "key_check"); string(m) != "old" || string(got.SealedPassword) != string(a.SealedPassword) || got.Version != 1 {
		t.Fatalf("a failed secrets transaction changed the store: %q %+v", m, got)
	}
	err = s.WithSecrets(ctx, func(tx store.SecretsTx) error {
		if m, err := tx.GetMeta(ctx, "key_check"); err != nil || string(m) != "old" {
			return fmt.Errorf("meta in tx: %q %v", m, err)
		}
		if err := tx.SetConnectionSecrets(ctx, a.ID, []byte("p2"), nil); err != nil {
			return err
		}
		if err := tx.SetConnectionSecrets(ctx, "nope", nil, nil); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("set secrets of a missing connection: %v", err)
		}
		if err := tx.SetConnectionAuthSecret(ctx, a.ID, []byte("s2")); err != nil {
			return err
		}
		if err := tx.SetConnectionAuthSecret(ctx, "nope", nil); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("set the auth secret of a missing connection: %v", err)
		}
		if err := tx.SetConnectionPendingKey(ctx, a.ID, []byte("pk2")); err != nil {
			return err
		}
		if err := tx.SetConnectionPendingKey(ctx, "nope", nil); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("set pending key of a missing connection: %v", err)
		}
		hk := slices.Clone(a.HopKeys)
		hk[0].SealedPrivateKey = []byte("hk2")
		if err := tx.SetConnectionHopKeys(ctx, a.ID, hk); err != nil {
			return err
		}
		if err := tx.SetConnectionHopKeys(ctx, "nope", nil); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("set hop keys of a missing connection: %v", err)
		}
		return tx.PutMeta(ctx, "key_check", []byte("new"))
	})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetConnection(ctx, "alpha")
	if m, _ := s.GetMeta(ctx, "key_check"); string(m) != "new" || string(got.SealedPassword) != "p2" || len(got.SealedPrivateKey) != 0 ||
		string(got.SealedAuthSecret) != "s2" || string(got.SealedPendingPrivateKey) != "pk2" || got.Version != 5 ||
		len(got.HopKeys) != 2 || string(got.HopKeys[0].SealedPrivateKey) != "hk2" || got.HopKeys[1].PublicKey != a.HopKeys[1].PublicKey {
		t.Fatalf("after the secrets transaction: %q %+v", m, got)
	}
	// An update prepared before the transaction conflicts.
	if err := s.UpdateConnection(ctx, a); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale update after re-sealing: %v, want ErrConflict", err)
	}
}
