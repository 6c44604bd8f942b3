package operations_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// Previous release point: the commit tagged (or to be tagged) v0.1.0, the
// last one before the operations round. The test builds its pgrelay.
const (
	previousTag    = "v0.1.0"
	previousCommit = "1fd70e5b42af9cd5ebe6c3f481db368d5151765c"
)

// git runs git in dir and returns its trimmed output.
func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// buildPrevious builds pgrelay at the previous release point from this
// repository's history (`git worktree add` of that commit into a temporary
// directory) and returns the binary. It skips the test only when there is
// no git history to build from (not a git checkout, or a shallow clone); a
// checkout with history but without the commit fails.
func buildPrevious(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: cannot build the previous release from history")
	}
	wd, _ := os.Getwd()
	root, err := git(wd, "rev-parse", "--show-toplevel")
	if err != nil {
		t.Skipf("not a git checkout, so the previous release cannot be built from its history: %v", err)
	}
	if shallow, _ := git(root, "rev-parse", "--is-shallow-repository"); shallow == "true" {
		t.Skipf("this is a shallow clone: the previous release (%s, commit %s) is not in its history; "+
			"run `git fetch --unshallow` to test upgrades from it", previousTag, previousCommit[:7])
	}
	commit, err := git(root, "rev-parse", "--verify", "--quiet", previousTag+"^{commit}")
	if err != nil || commit == "" {
		if commit, err = git(root, "rev-parse", "--verify", "--quiet", previousCommit+"^{commit}"); err != nil {
			t.Fatalf("the previous release (tag %s, commit %s) is not in this repository's history: %v", previousTag, previousCommit, err)
		}
	}
	if commit != previousCommit {
		t.Fatalf("tag %s points at %s, want %s", previousTag, commit, previousCommit)
	}
	dir := filepath.Join(t.TempDir(), "pgrelay-"+previousTag)
	if _, err := git(root, "worktree", "add", "--detach", dir, commit); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := git(root, "worktree", "remove", "--force", dir); err != nil {
			t.Log(err)
		}
	})
	bin := filepath.Join(t.TempDir(), "pgrelay-"+previousTag)
	ctx, cancel := context.WithTimeout(bg, 5*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/pgrelay")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the previous release: %v\n%s", err, out)
	}
	t.Logf("built pgrelay %s (commit %s) in %v", previousTag, commit[:7], time.Since(start).Round(time.Second))
	return bin
}

// subset fails unless every field the old binary showed of a record is
// the same in what the new one shows (which may show more fields).
func subset(t *testing.T, what string, old, cur *state) {
	t.Helper()
	lists := []struct {
		name     string
		old, cur []map[string]any
	}{{"connections", old.Connections, cur.Connections}, {"jobs", old.Jobs, cur.Jobs}, {"runs", old.Runs, cur.Runs},
		{"tokens", old.Tokens, cur.Tokens}}
	for _, l := range lists {
		if len(l.old) != len(l.cur) {
			t.Fatalf("%s: %d %s, the old binary showed %d", what, len(l.cur), l.name, len(l.old))
		}
		for i, o := range l.old {
			for k, v := range o {
				if !reflect.DeepEqual(l.cur[i][k], v) {
					t.Errorf("%s: %s[%d].%s = %v, the old binary showed %v", what, l.name, i, k, l.cur[i][k], v)
				}
			}
		}
	}
	if !reflect.DeepEqual(old.Logs, cur.Logs) {
		t.Errorf("%s: run logs differ:\n got %v\nwant %v", what, cur.Logs, old.Logs)
	}
}

// TestUpgradeFromPreviousRelease builds pgrelay at the previous release,
// saves data with it (a connection with a password, one with a tunnel key
// authorized on the bastion and a pinned host key, a job, a run with its
// log, an API token) in the embedded store and in a shared PostgreSQL
// store, then opens the stores with this pgrelay: every record is there as
// it was, queries work directly and through the bastion, the token works
// against a server, the job runs, the web UI signs in. A store that a
// newer pgrelay migrated is refused with a clear message.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the previous release: skipped with -short (make test runs it)")
	}
	t.Parallel()
	old := buildPrevious(t)
	w := newWorld(t)

	t.Run("Embedded", func(t *testing.T) {
		s := newSite(t)
		s.bin = old
		p := populate(t, s, w)
		before := s.readState()
		s.bin = ""
		subset(t, "embedded store opened by this pgrelay", before, s.readState())
		queriesWork(t, s)
		checkServes(t, s.serve("upgraded"), p)

		// The store, migrated by a pgrelay newer than this one, is refused.
		db, err := sql.Open("sqlite", "file:"+filepath.Join(s.dir, sqlite.FileName))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (9999, '2099-01-01T00:00:00.000000000Z')`); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
		stderr := s.fail(1, "connection", "list")
		mustContain(t, "a store of a newer pgrelay", stderr, "migration 9999", "newer pgrelay", "changed nothing")
	})

	t.Run("SharedPostgres", func(t *testing.T) {
		s := newSite(t, "PGRELAY_STORE="+w.storeURL(t), secret.MasterKeyEnv+"="+e2etest.NewMasterKey())
		s.bin = old
		p := populate(t, s, w)
		before := s.readState()
		s.bin = ""
		subset(t, "PostgreSQL store opened by this pgrelay", before, s.readState())
		queriesWork(t, s)
		checkServes(t, s.serve("upgraded-shared"), p)
	})
}
