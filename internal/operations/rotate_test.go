package operations_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// killAt runs pgrelay with args until it stops at point (see the CLI's
// PGRELAY_TEST_PAUSE_AT, which only tests set), then kills it with SIGKILL.
func killAt(t *testing.T, s *site, point string, args ...string) {
	t.Helper()
	cmd := exec.Command(s.binary(), args...)
	cmd.Env = append(slices.Clone(s.env), "PGRELAY_TEST_PAUSE_AT="+point)
	var stdout, stderr e2etest.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), "paused at "+point) {
		select {
		case err := <-exited:
			t.Fatalf("pgrelay %s ended (%v) before it reached %s:\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, point,
				stdout.String(), stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgrelay %s did not reach %s within 30 s:\n%s", strings.Join(args, " "), point, stderr.String())
		}
	}
	if err := e2etest.KillTree(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("pgrelay killed at %s ended with %v", point, err)
	}
	t.Logf("killed `pgrelay %s` at %s", strings.Join(args, " "), point)
}

func readKey(t *testing.T, path string) []byte {
	t.Helper()
	k, err := secret.ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func keyring(t *testing.T, key []byte) *secret.Keyring {
	t.Helper()
	kr, err := secret.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// opensWith says which of the keys open the store (its key check and the
// secrets of every connection), reading it without changing it.
func opensWith(t *testing.T, st store.Store, keys ...[]byte) []bool {
	t.Helper()
	conns, err := st.ListConnections(bg)
	if err != nil {
		t.Fatal(err)
	}
	var out []bool
	for _, k := range keys {
		kr := keyring(t, k)
		ok := app.VerifyMasterKey(bg, st, kr) == nil
		for _, c := range conns {
			// Every secret opens exactly when the key check does: nothing
			// is sealed with the other key.
			if _, err := kr.Open(c.SealedPrivateKey, []byte("pgrelay/connection/"+c.ID+"/ssh_private_key")); len(c.SealedPrivateKey) > 0 && (err == nil) != ok {
				t.Errorf("connection %s: private key opens with a key: %v, key check: %v", c.Spec.Name, err == nil, ok)
			}
		}
		out = append(out, ok)
	}
	return out
}

func opensWithSQLite(t *testing.T, dataDir string, keys ...[]byte) []bool {
	t.Helper()
	st, err := sqlite.OpenReadOnly(bg, filepath.Join(dataDir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return opensWith(t, st, keys...)
}

func opensWithPostgres(t *testing.T, url string, keys ...[]byte) []bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	st, err := postgres.Open(ctx, url, postgres.WithoutMigrations())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return opensWith(t, st, keys...)
}

// exactlyOne fails unless exactly the want'th key opens the store.
func exactlyOne(t *testing.T, what string, opens []bool, want int) {
	t.Helper()
	for i, ok := range opens {
		if ok != (i == want) {
			t.Fatalf("%s: keys that open the store %v, want only key %d", what, opens, want)
		}
	}
}

// queriesWork runs a query on both connections populate made.
func queriesWork(t *testing.T, s *site) {
	t.Helper()
	for _, c := range []string{"direct", "tunneled"} {
		if out := s.ok("query", c, "select current_user"); !strings.Contains(out, "dbt") {
			t.Fatalf("query %s: %s", c, out)
		}
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// TestMasterKeyRotation rotates the master key of a data dir and of a
// shared PostgreSQL store whose key comes from the environment, completely
// and killed (SIGKILL) at every point of the rotation: afterwards exactly
// one of the two keys opens the store, every secret opens with it, the next
// command finishes or undoes the rotation, and nothing is lost. After a
// rotation the old key is refused, also by a server started before it.
func TestMasterKeyRotation(t *testing.T) {
	t.Parallel()
	w := newWorld(t)

	t.Run("DataDir", func(t *testing.T) {
		for _, tc := range []struct {
			point string
			// committed says whether the store is sealed with the new key
			// once the rotation is killed at point.
			committed bool
		}{
			{"rotate:key-written", false},
			{"rotate:resealed", false},
			{"rotate:committed", true},
			{"", true}, // not killed
		} {
			name := strings.TrimPrefix(tc.point, "rotate:")
			if name == "" {
				name = "complete"
			}
			t.Run(name, func(t *testing.T) {
				s := newSite(t)
				p := populate(t, s, w)
				keyPath, nextPath := filepath.Join(s.dir, secret.MasterKeyFile), filepath.Join(s.dir, secret.NextMasterKeyFile)
				old := readKey(t, keyPath)
				before := normalize(s.readState())
				var next []byte
				if tc.point != "" {
					killAt(t, s, tc.point, "master-key", "rotate")
					next = readKey(t, nextPath)
					want := 0
					if tc.committed {
						want = 1
					}
					exactlyOne(t, "killed at "+tc.point, opensWithSQLite(t, s.dir, old, next), want)
				} else {
					out := s.ok("master-key", "rotate")
					mustContain(t, "rotate output", out, "Sealed 2 passwords and 1 SSH private key of 2 connections", keyPath)
					if bytes.Contains([]byte(out), []byte(secret.EncodeKey(readKey(t, keyPath)))) {
						t.Fatal("rotate printed the new key")
					}
					next = readKey(t, keyPath)
				}
				// The next command finishes (or undoes) the rotation.
				queriesWork(t, s)
				if exists(nextPath) {
					t.Fatalf("%s left behind after the next command", secret.NextMasterKeyFile)
				}
				got := readKey(t, keyPath)
				if tc.committed != bytes.Equal(got, next) || tc.committed == bytes.Equal(got, old) {
					t.Fatalf("master.key after recovery: new key %v, old key %v; want the new one: %v",
						bytes.Equal(got, next), bytes.Equal(got, old), tc.committed)
				}
				exactlyOne(t, "after recovery", opensWithSQLite(t, s.dir, got), 0)
				after := normalize(s.readState())
				for _, c := range after.Connections {
					delete(c, "updated_at") // a legacy password may be re-bound; nothing else changes
				}
				for _, c := range before.Connections {
					delete(c, "updated_at")
				}
				equalState(t, "records after the rotation", before, after)
				if tc.committed {
					stderr := s.with(secret.MasterKeyEnv+"="+secret.EncodeKey(old)).fail(1, "connection", "list")
					mustContain(t, "old key after the rotation", stderr, "master key does not match")
				} else {
					// An undone rotation can be run again.
					s.ok("master-key", "rotate")
					queriesWork(t, s)
				}
				checkServes(t, s.serve("after-"+name), p)
			})
		}
	})

	t.Run("SharedStoreKeyFromEnv", func(t *testing.T) {
		pgURL := w.storeURL(t)
		old := e2etest.NewMasterKey()
		s := newSite(t, "PGRELAY_STORE="+pgURL, secret.MasterKeyEnv+"="+old)
		p := populate(t, s, w)
		running := s.serve("old-key") // keeps running with the old key
		newFile := filepath.Join(t.TempDir(), "new.key")

		stderr := s.fail(2, "master-key", "rotate")
		mustContain(t, "rotate without --new-key-file", stderr, "--new-key-file", secret.MasterKeyEnv)

		killAt(t, s, "rotate:resealed", "master-key", "rotate", "--new-key-file", newFile)
		oldRaw, _ := base64.StdEncoding.DecodeString(old)
		newRaw := readKey(t, newFile)
		exactlyOne(t, "killed in the transaction", opensWithPostgres(t, pgURL, oldRaw, newRaw), 0)
		queriesWork(t, s)

		// Run again: the key written before is used.
		out := s.ok("master-key", "rotate", "--new-key-file", newFile)
		mustContain(t, "rotate output", out, "Sealed 2 passwords", newFile, secret.MasterKeyEnv)
		if !bytes.Equal(readKey(t, newFile), newRaw) {
			t.Fatal("the rotation replaced the key given in --new-key-file")
		}
		exactlyOne(t, "after the rotation", opensWithPostgres(t, pgURL, oldRaw, newRaw), 1)
		mustContain(t, "old key after the rotation", s.fail(1, "connection", "list"), "master key does not match")

		// The server started with the old key reports not ready and
		// refuses to seal secrets with it.
		resp, err := running.HTTPClient().Get(running.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("/readyz of a server with the old key: %d, want 503", resp.StatusCode)
		}
		_, err = running.Client(t, p.token).CreateConnection(bg, connection.Spec{Name: "sealed-with-old", Host: w.pg.Host,
			Port: w.pg.Port, Database: "analytics", User: "dbt", Password: secret.New("pw-old-key")})
		if err == nil {
			t.Error("a server with the old key saved a password after the rotation")
		}
		mustContain(t, "log of the server with the old key", running.Stderr(), "master key changed since this process started")
		running.Stop()

		n := s.with(secret.MasterKeyEnv + "=" + secret.EncodeKey(newRaw))
		queriesWork(t, n)
		if out := n.ok("connection", "list"); strings.Contains(out, "sealed-with-old") {
			t.Fatal("the connection the old-key server refused was saved")
		}
		checkServes(t, n.serve("new-key"), p)

		// Killed after the commit: the store is sealed with the newer key;
		// running the rotation again says so and changes nothing.
		newerFile := filepath.Join(t.TempDir(), "newer.key")
		killAt(t, n, "rotate:committed", "master-key", "rotate", "--new-key-file", newerFile)
		newerRaw := readKey(t, newerFile)
		exactlyOne(t, "killed after the commit", opensWithPostgres(t, pgURL, newRaw, newerRaw), 1)
		mustContain(t, "rotate again", n.ok("master-key", "rotate", "--new-key-file", newerFile), "already sealed with the key in")
		queriesWork(t, n.with(secret.MasterKeyEnv+"="+secret.EncodeKey(newerRaw)))
	})
}
