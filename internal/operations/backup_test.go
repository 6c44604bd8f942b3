package operations_test

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// TestBackupRestore backs the embedded store up while a server writes to
// it, restores the backup into an empty data dir with the master key kept
// apart, and serves it; restores into a data dir with data, without the
// key, with another key or from a damaged file are refused.
func TestBackupRestore(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := newSite(t)
	p := populate(t, a, w)
	want := normalize(a.readState())
	srv := a.serve("A")
	c := srv.Client(t, p.token)

	// Tokens are created through the API while the backups are taken.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.CreateToken(bg, "during-backup-"+strconv.Itoa(i), auth.Viewer); err != nil {
				t.Errorf("write during the backup: %v", err)
				return
			}
		}
	})
	dir := t.TempDir()
	var backups []string
	for i := range 3 {
		out := filepath.Join(dir, "pgrelay-"+strconv.Itoa(i)+".db")
		res := a.ok("backup", "--out", out)
		mustContain(t, "backup output", res, "Backed up", "opens", "master key is not in the backup")
		backups = append(backups, out)
	}
	close(stop)
	wg.Wait()
	srv.Stop()
	for _, b := range backups {
		fi, err := os.Stat(b)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("backup %s: %v %v, want mode 0600", b, fi, err)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.tmp-*")); len(m) > 0 {
		t.Errorf("backup left temporary files: %v", m)
	}

	key, err := os.ReadFile(filepath.Join(a.dir, secret.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	restoreInto := func(t *testing.T, key []byte) *site {
		s := newSite(t)
		if key != nil {
			if err := os.WriteFile(filepath.Join(s.dir, secret.MasterKeyFile), key, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}

	t.Run("RestoreAndServe", func(t *testing.T) {
		b := restoreInto(t, key)
		mustContain(t, "restore output", b.ok("restore", backups[2]), "Restored", "2 connections")
		got := normalize(b.readState())
		// Tokens were being created: the backup has some of them.
		admin := 0
		for _, tk := range got.Tokens {
			if tk["name"] == "ops-admin" {
				admin++
			}
		}
		if len(got.Tokens) < 2 || admin != 1 {
			t.Errorf("restored tokens: %d, with ops-admin %d times", len(got.Tokens), admin)
		}
		got.Tokens, want.Tokens = nil, nil
		equalState(t, "restored store", want, got)
		checkServes(t, b.serve("B"), p)
	})

	t.Run("Refusals", func(t *testing.T) {
		b := restoreInto(t, key)
		b.ok("restore", backups[0])
		mustContain(t, "restore into a data dir with a store", b.fail(2, "restore", backups[1]), "not empty", "pgrelay.db")
		mustContain(t, "restore without a key", restoreInto(t, nil).fail(1, "restore", backups[0]),
			"needs the master key", secret.MasterKeyFile)
		other := []byte(e2etest.NewMasterKey() + "\n")
		mustContain(t, "restore with another key", restoreInto(t, other).fail(2, "restore", backups[0]),
			"another master key")
		damaged := filepath.Join(t.TempDir(), "damaged.db")
		data, _ := os.ReadFile(backups[0])
		if err := os.WriteFile(damaged, data[:len(data)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		mustContain(t, "restore of a damaged file", restoreInto(t, key).fail(2, "restore", damaged), "not a pgrelay store", "pgrelay backup")
		notStore := filepath.Join(t.TempDir(), "notes.txt")
		if err := os.WriteFile(notStore, []byte("not a database\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		mustContain(t, "restore of a file that is no store", restoreInto(t, key).fail(2, "restore", notStore), "not a pgrelay store", "pgrelay backup")
		// A missing file is named first, also without a master key (it
		// asked for the key and never said the file was not there).
		missing := filepath.Join(t.TempDir(), "missing.db")
		mustContain(t, "restore of a missing file", restoreInto(t, nil).fail(2, "restore", missing), missing, "no such file", "pgrelay backup")
		mustContain(t, "restore of a directory", restoreInto(t, key).fail(2, "restore", t.TempDir()), "is a directory", "pgrelay backup")
		mustContain(t, "backup onto an existing file", a.fail(2, "backup", "--out", backups[0]), "exists")
		mustContain(t, "backup of a PostgreSQL store",
			a.with("PGRELAY_STORE="+w.storeURL(t)).fail(2, "backup", "--out", filepath.Join(t.TempDir(), "x.db")), "pg_dump")
		mustContain(t, "backup of an empty data dir", newSite(t).fail(1, "backup", "--out", filepath.Join(t.TempDir(), "x.db")),
			"no store")
	})
}
