package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/store"
)

// sampleAudit is an audit record with every field set.
func sampleAudit(i int, at time.Time) *audit.Record {
	return &audit.Record{Time: at, Actor: audit.Actor{Kind: audit.ActorToken, ID: fmt.Sprintf("tok%d", i%3), Name: "ci"},
		Action: []string{"connection.query", "connection.update", "run.start"}[i%3], TargetKind: audit.TargetConnection,
		Target: []string{"alpha", "beta"}[i%2], Outcome: audit.OK, Error: "", Client: "127.0.0.1:40000", Detail: "d é",
		Use: &audit.Use{KeyFingerprint: "SHA256:abc", Hops: []string{"u@b:22", "v@c:2222"}, SQLDigests: []string{"0123"},
			Commands: [][]string{{"dbt", "run", "--password=[redacted]"}}, RunID: fmt.Sprintf("run-%d", i)}}
}

func appendAudit(t testing.TB, s store.Store, r *audit.Record) {
	t.Helper()
	if err := s.AppendAudit(context.Background(), r); err != nil {
		t.Fatal(err)
	}
}

func verify(t testing.TB, s store.Store) *audit.Verification {
	t.Helper()
	v, err := audit.Verify(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func exerciseAudit(t *testing.T, s store.Store) {
	ctx := context.Background()
	if v := verify(t, s); !v.OK || v.Records != 0 {
		t.Fatalf("empty log: %+v", v)
	}
	base := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	for i := range 30 {
		r := sampleAudit(i, base.Add(time.Duration(i)*time.Minute))
		if i == 7 {
			r.Use, r.Outcome, r.Error, r.Actor = nil, audit.Failed, "not_found", audit.LocalUser()
		}
		appendAudit(t, s, r)
		if r.Seq != int64(i+1) || r.Hash == "" || r.Time.Nanosecond()%1000 != 0 {
			t.Fatalf("appended record %d: %+v", i, r)
		}
	}
	all, err := s.AuditAfter(ctx, 0, 100)
	if err != nil || len(all) != 30 || all[0].Seq != 1 || all[29].Seq != 30 {
		t.Fatalf("AuditAfter: %d records, %v", len(all), err)
	}
	if all[7].Use != nil || all[8].Use == nil || len(all[8].Use.Commands[0]) != 3 || all[8].Detail != "d é" {
		t.Fatalf("records read back: %+v %+v", all[7], all[8].Use)
	}
	if v := verify(t, s); !v.OK || v.Records != 30 || v.Chain.HeadSeq != 30 {
		t.Fatalf("verify: %+v", v)
	}

	// Filters, newest first.
	list := func(f audit.Filter) []int64 {
		t.Helper()
		recs, err := s.ListAudit(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []int64
		for _, r := range recs {
			seqs = append(seqs, r.Seq)
		}
		return seqs
	}
	if got := list(audit.Filter{Limit: 3}); fmt.Sprint(got) != "[30 29 28]" {
		t.Errorf("newest 3: %v", got)
	}
	if got := list(audit.Filter{Since: base.Add(27 * time.Minute)}); fmt.Sprint(got) != "[30 29 28]" {
		t.Errorf("since: %v", got)
	}
	if got := list(audit.Filter{Actor: "tok1", Limit: 2}); fmt.Sprint(got) != "[29 26]" {
		t.Errorf("actor by ID: %v", got)
	}
	if got := list(audit.Filter{Actor: audit.LocalUser().Name}); fmt.Sprint(got) != "[8]" {
		t.Errorf("actor by name: %v", got)
	}
	if got := list(audit.Filter{Target: "connection:alpha", BeforeSeq: 6}); fmt.Sprint(got) != "[5 3 1]" {
		t.Errorf("target with kind, before: %v", got)
	}
	if got := list(audit.Filter{Target: "beta", Action: "connection", Limit: 3}); fmt.Sprint(got) != "[28 26 22]" {
		t.Errorf("target by name, action noun: %v", got)
	}
	if got := list(audit.Filter{Action: "run.start", Limit: 2}); fmt.Sprint(got) != "[30 27]" {
		t.Errorf("action: %v", got)
	}
	if got := list(audit.Filter{Target: "job:alpha"}); len(got) != 0 {
		t.Errorf("other kind: %v", got)
	}

	// Concurrent appends form one chain.
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.AppendAudit(ctx, sampleAudit(i, base.Add(time.Hour)))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if v := verify(t, s); !v.OK || v.Records != 70 {
		t.Fatalf("after concurrent appends: %+v", v)
	}

	// Retention deletes the oldest before the cut, in batches, and keeps
	// the chain verifiable.
	if n, err := s.PruneAudit(ctx, base.Add(10*time.Minute), 4); err != nil || n != 4 {
		t.Fatalf("prune: %d %v", n, err)
	}
	if n, err := s.PruneAudit(ctx, base.Add(10*time.Minute), 100); err != nil || n != 6 {
		t.Fatalf("prune rest: %d %v", n, err)
	}
	if n, err := s.PruneAudit(ctx, base.Add(10*time.Minute), 100); err != nil || n != 0 {
		t.Fatalf("prune again: %d %v", n, err)
	}
	v := verify(t, s)
	if !v.OK || v.Records != 60 || v.Chain.AnchorSeq != 10 || v.Chain.AnchorHash != all[9].Hash {
		t.Fatalf("after retention: %+v", v)
	}
	r := sampleAudit(0, base.Add(2*time.Hour))
	appendAudit(t, s, r)
	if r.Seq != 71 {
		t.Fatalf("append after retention: seq %d", r.Seq)
	}
	if v := verify(t, s); !v.OK {
		t.Fatalf("after retention and append: %+v", v)
	}
}

// Tamper changes a stored audit record in place (Edit) or deletes it
// (Delete), as someone with write access to the database could: what
// ExerciseAuditTamper checks that verification finds. Each works on the
// backend's own tables, around its append-only guard.
type Tamper struct {
	Edit   func(t *testing.T, s store.Store, seq int64)
	Delete func(t *testing.T, s store.Store, seq int64)
}

// ExerciseAuditTamper checks that an edited or deleted audit record makes
// verification fail and name the first broken record.
func ExerciseAuditTamper(t *testing.T, open func(t *testing.T) store.Store, tp Tamper) {
	fill := func(t *testing.T) store.Store {
		s := open(t)
		base := time.Now().UTC()
		for i := range 12 {
			appendAudit(t, s, sampleAudit(i, base.Add(time.Duration(i)*time.Second)))
		}
		if v := verify(t, s); !v.OK {
			t.Fatalf("intact log: %+v", v)
		}
		return s
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, s store.Store)
		broken int64
	}{
		{"edited", func(t *testing.T, s store.Store) { tp.Edit(t, s, 5) }, 5},
		{"deleted", func(t *testing.T, s store.Store) { tp.Delete(t, s, 7) }, 7},
		{"first deleted", func(t *testing.T, s store.Store) { tp.Delete(t, s, 1) }, 1},
		{"last deleted", func(t *testing.T, s store.Store) { tp.Delete(t, s, 12) }, 12},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := fill(t)
			c.tamper(t, s)
			v := verify(t, s)
			if v.OK || v.Broken != c.broken {
				t.Fatalf("after the record was %s: %+v, want broken at %d", c.name, v, c.broken)
			}
		})
	}
}
