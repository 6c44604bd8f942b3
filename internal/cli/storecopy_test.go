package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/secret"
)

// TestStoreCopyRefusesKeyValueConnString: a libpq key=value connection
// string as --to or --from is refused (exit 2), naming the flag and what
// is accepted, without showing the string. Before, it was taken for a
// relative data dir: `store copy --to 'host=db password=...'` made a
// directory named after the string, password and all, copied the store
// there as SQLite (exit 0) and printed the path.
func TestStoreCopyRefusesKeyValueConnString(t *testing.T) {
	// Not parallel: the command runs in a directory of its own, where a
	// relative path taken for a data dir would be made.
	cwd := t.TempDir()
	t.Chdir(cwd)
	h := newHarness(t)
	h.env["PW"] = "pw-s3cret-neighbour"
	h.ok("connection", "create", "direct", "--host", "127.0.0.1", "--database", "d", "--user", "u", "--password-env", "PW")
	const conninfo = "host=127.0.0.1 port=5432 user=pgrelay password=kv-s3cret dbname=pgrelay"
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"store", "copy", "--from", h.dataDir, "--to", conninfo}, "--to"},
		{[]string{"store", "copy", "--from", h.dataDir, "--to", " dbname = pgrelay"}, "--to"},
		{[]string{"store", "copy", "--from", conninfo, "--to", t.TempDir()}, "--from"},
	} {
		what := strings.Join(c.args, " ")
		r := h.fail(2, c.args...)
		contains(t, what, r.stderr, c.flag+": a key=value connection string", "accepted are a data dir, a SQLite file or a postgres:// URL")
		if strings.Contains(r.stdout+r.stderr, "kv-s3cret") {
			t.Errorf("%s: the output holds the password:\n%s", what, r)
		}
	}
	if entries, err := os.ReadDir(cwd); err != nil || len(entries) > 0 {
		t.Errorf("store copy made %v in its working directory (%v), want nothing", entries, err)
	}
}

// TestStoreCopyWrongKeyMakesNothing: a copy refused because the master key
// does not open the source leaves no target behind (it left an empty
// store in the new data dir).
func TestStoreCopyWrongKeyMakesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["PW"] = "pw"
	h.ok("connection", "create", "direct", "--host", "127.0.0.1", "--database", "d", "--user", "u", "--password-env", "PW")
	other, err := secret.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	h.env[secret.MasterKeyEnv] = secret.EncodeKey(other)
	to := filepath.Join(t.TempDir(), "copy")
	r := h.fail(1, "store", "copy", "--from", h.dataDir, "--to", to)
	contains(t, "copy with another key", r.stderr, "source store")
	if _, err := os.Stat(to); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(to)
		t.Fatalf("the refused copy left %s behind: %v", to, entries)
	}
}
