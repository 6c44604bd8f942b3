package operations_test

import (
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
)

// normalize makes two stores' states comparable: times have microsecond
// precision (PostgreSQL keeps no finer), lists are sorted.
func normalize(st *state) *state {
	var walk func(v any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				x[k] = walk(e)
			}
		case []any:
			for i, e := range x {
				x[i] = walk(e)
			}
		case string:
			if tm, err := time.Parse(time.RFC3339Nano, x); err == nil {
				return tm.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano)
			}
		}
		return v
	}
	out := *st
	for _, c := range out.Connections {
		// A connection's health changes with every use (the queries that
		// check a store work); the store suite compares its history.
		delete(c, "health")
	}
	for _, l := range [][]map[string]any{out.Connections, out.Jobs, out.Runs, out.Tokens} {
		for _, m := range l {
			walk(m)
		}
	}
	sort.Slice(out.Tokens, func(i, j int) bool { return out.Tokens[i]["id"].(string) < out.Tokens[j]["id"].(string) })
	return &out
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

type copyReport struct {
	From string `json:"from"`
	To   string `json:"to"`
	app.CopyReport
}

// TestStoreCopy moves a store from SQLite to PostgreSQL (while the source
// serves) and back: every record arrives unchanged, and a server on the
// target with the same master key works at once (copied token, queries
// direct and through the bastion with the same key pair and pinned host
// key, a job run, web UI sign-in). The source is left as it was; a target
// with records is refused unless --merge, which refuses records it has
// and a target sealed with another key.
func TestStoreCopy(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := newSite(t)
	p := populate(t, a, w)
	keyFile := filepath.Join(a.dir, secret.MasterKeyFile)
	want := normalize(a.readState())

	pgURL := w.storeURL(t)
	srvA := a.serve("A") // the copy reads a snapshot: the source may serve
	var rep copyReport
	a.json(&rep, "store", "copy", "--from", a.dir, "--to", pgURL)
	srvA.Stop()
	wantCounts := store.Counts{Connections: 2, Tokens: 1, Jobs: 1, Runs: 1, RunLogLines: rep.Copied.RunLogLines,
		AuditRecords: rep.Copied.AuditRecords}
	if rep.Copied != wantCounts || rep.Target != wantCounts || rep.Copied.RunLogLines == 0 || rep.Copied.AuditRecords == 0 ||
		rep.Unfinished != 0 {
		t.Fatalf("copy report: %+v", rep)
	}
	if rep.To == pgURL || !json.Valid([]byte(`"`+rep.To+`"`)) {
		t.Errorf("the report shows the store URL with its password: %q", rep.To)
	}

	b := newSite(t, "PGRELAY_STORE="+pgURL, secret.MasterKeyFileEnv+"="+keyFile)
	equalState(t, "PostgreSQL copy", want, normalize(b.readState()))

	t.Run("SourceUntouched", func(t *testing.T) {
		db := filepath.Join(a.dir, "pgrelay.db")
		before := fileSum(t, db)
		out := a.ok("store", "copy", "--from", db, "--to", w.storeURL(t))
		// What to run next names the key every process of a shared store needs.
		if !strings.Contains(out, secret.MasterKeyFileEnv+"="+filepath.Join(a.dir, secret.MasterKeyFile)+" pgrelay --store ") {
			t.Errorf("store copy's next step does not name the master key file:\n%s", out)
		}
		if fileSum(t, db) != before {
			t.Fatal("store copy changed its source file")
		}
		equalState(t, "source after copies", want, normalize(a.readState()))
		// A backup file (not in WAL mode) as the source stays as it was too.
		backup := filepath.Join(t.TempDir(), "backup.db")
		a.ok("backup", "--out", backup)
		before = fileSum(t, backup)
		// The backup's directory has no master key: give it.
		a.with(secret.MasterKeyFileEnv+"="+keyFile).ok("store", "copy", "--from", backup, "--to", w.storeURL(t))
		if fileSum(t, backup) != before {
			t.Fatal("store copy changed the backup it copied")
		}
		if m, _ := filepath.Glob(backup + "-*"); len(m) > 0 {
			t.Fatalf("store copy wrote beside the backup it copied: %v", m)
		}
	})

	t.Run("ServesOnTarget", func(t *testing.T) {
		srvB := b.serve("B")
		checkServes(t, srvB, p)
		srvB.Stop()
	})

	t.Run("AndBack", func(t *testing.T) {
		onPG := normalize(b.readState())
		cdir := filepath.Join(t.TempDir(), "data")
		b.ok("store", "copy", "--from", pgURL, "--to", cdir)
		c := &site{t: t, dir: cdir, env: e2etest.ProcessEnv("PGRELAY_DATA_DIR="+cdir, secret.MasterKeyFileEnv+"="+keyFile)}
		// Without its key the copy is refused, and no new key is made.
		noKey := &site{t: t, dir: cdir, env: e2etest.ProcessEnv("PGRELAY_DATA_DIR=" + cdir)}
		mustContain(t, "the copy without its key", noKey.fail(1, "connection", "list"), "not here", secret.MasterKeyFile)
		if exists(filepath.Join(cdir, secret.MasterKeyFile)) {
			t.Fatal("a new master key was made for a store sealed with another one")
		}
		equalState(t, "SQLite copy of the PostgreSQL store", onPG, normalize(c.readState()))
		checkServes(t, c.serve("C"), p)
	})

	t.Run("Refusals", func(t *testing.T) {
		stderr := a.fail(2, "store", "copy", "--from", a.dir, "--to", pgURL)
		mustContain(t, "copy into a store with records", stderr, "not empty", "2 connections", "--merge")
		stderr = a.fail(2, "store", "copy", "--from", a.dir, "--to", pgURL, "--merge")
		mustContain(t, "merge of records the target has", stderr, "already exists", "nothing was copied")
		stderr = a.with(secret.MasterKeyEnv+"="+e2etest.NewMasterKey()).fail(1, "store", "copy", "--from", a.dir, "--to", w.storeURL(t))
		mustContain(t, "copy with another key", stderr, "source store", "master key does not match")
		a.fail(2, "store", "copy", "--from", a.dir, "--to", a.dir)
		a.fail(2, "store", "copy", "--from", filepath.Join(t.TempDir(), "nothing"), "--to", pgURL)
	})

	t.Run("Merge", func(t *testing.T) {
		pg2 := w.storeURL(t)
		d := newSite(t, "PGRELAY_STORE="+pg2, secret.MasterKeyFileEnv+"="+keyFile)
		d.ok("connection", "create", "other", "--host", w.pg.Host, "--port", itoa(w.pg.Port), "--database", "analytics",
			"--user", "dbt", "--password-env", "DB_PASSWORD")
		var rep copyReport
		a.json(&rep, "store", "copy", "--from", a.dir, "--to", pg2, "--merge")
		if rep.Copied.Connections != 2 || rep.Target.Connections != 3 {
			t.Fatalf("merge report: %+v", rep)
		}
		for _, c := range []string{"other", "direct", "tunneled"} {
			d.ok("query", c, "select 1")
		}
		// A target sealed with another key is refused, even with --merge.
		pg3 := w.storeURL(t)
		e := newSite(t, "PGRELAY_STORE="+pg3, secret.MasterKeyEnv+"="+e2etest.NewMasterKey())
		e.ok("connection", "create", "other", "--host", w.pg.Host, "--port", itoa(w.pg.Port), "--database", "analytics", "--user", "dbt")
		stderr := a.fail(1, "store", "copy", "--from", a.dir, "--to", pg3, "--merge")
		mustContain(t, "merge into a store of another key", stderr, "target store", "another master key")
	})
}
