package operations_test

import (
	"bytes"
	"encoding/base64"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// commitReplyDropper is a TCP relay on loopback in front of PostgreSQL that
// forwards everything, except that on a connection that took the master
// key rotation's table lock, it passes the transaction's COMMIT on to the
// server and then cuts the connection instead of delivering the server's
// answer: the rotation commits, but the process that ran it sees an error
// (as when the network or the store's connection breaks at that moment).
type commitReplyDropper struct {
	ln      net.Listener
	target  string
	dropped atomic.Bool
}

func startCommitReplyDropper(t *testing.T, target string) *commitReplyDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &commitReplyDropper{ln: ln, target: target}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); d.serve(c) }()
		}
	}()
	return d
}

func (d *commitReplyDropper) serve(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", d.target)
	if err != nil {
		return
	}
	defer s.Close()
	var locked, commitSent atomic.Bool
	go func() {
		defer s.Close()
		defer c.Close()
		buf := make([]byte, 64*1024)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				chunk := buf[:n]
				if bytes.Contains(chunk, []byte("LOCK TABLE pgrelay_meta")) {
					locked.Store(true)
				}
				// pgx commits with the simple query "commit".
				if locked.Load() && !d.dropped.Load() && bytes.Contains(chunk, []byte("commit\x00")) {
					commitSent.Store(true)
				}
				if _, werr := s.Write(chunk); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64*1024)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if commitSent.Load() {
				// The server's answer to COMMIT: it committed; the client
				// never learns it.
				d.dropped.Store(true)
				return
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (d *commitReplyDropper) port() int { return d.ln.Addr().(*net.TCPAddr).Port }

// TestMasterKeyRotationCommitAnswerLost rotates the master key of a
// PostgreSQL store while the answer to the rotation's COMMIT is lost (the
// store committed, the connection broke before pgrelay heard it). The new
// key must not be thrown away: the store is sealed with it.
func TestMasterKeyRotationCommitAnswerLost(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "dbt", warehousePassword)
	pg.CreateDatabase(t, "analytics", "dbt")
	pg.CreateRole(t, "pgrelay", "store-Pw")
	n := 0
	storeURL := func(t *testing.T) (direct, dropped string, d *commitReplyDropper) {
		n++
		name := "store_" + strconv.Itoa(n)
		pg.CreateDatabase(t, name, "pgrelay")
		direct = pg.ConnString("pgrelay", "store-Pw", name)
		d = startCommitReplyDropper(t, net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)))
		u, err := url.Parse(direct)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(d.port()))
		return direct, u.String(), d
	}
	create := func(s *site) {
		s.ok("connection", "create", "direct", "--host", pg.Host, "--port", strconv.Itoa(pg.Port), "--database", "analytics",
			"--user", "dbt", "--password-env", "DB_PASSWORD")
	}
	works := func(t *testing.T, s *site) {
		t.Helper()
		if out := s.ok("query", "direct", "select current_user"); !bytes.Contains([]byte(out), []byte("dbt")) {
			t.Fatalf("query: %s", out)
		}
	}

	t.Run("KeyInDataDir", func(t *testing.T) {
		direct, viaDropper, d := storeURL(t)
		s := newSite(t, "PGRELAY_STORE="+direct)
		keyPath := filepath.Join(s.dir, secret.MasterKeyFile)
		if err := secret.CreateKeyFile(keyPath, mustDecode(t, e2etest.NewMasterKey())); err != nil {
			t.Fatal(err)
		}
		create(s)
		old := readKey(t, keyPath)
		r := s.with("PGRELAY_STORE="+viaDropper).run("master-key", "rotate")
		if !d.dropped.Load() {
			t.Fatalf("the COMMIT's answer was not dropped (exit %d):\n%s\n%s", r.Code, r.Stdout, r.Stderr)
		}
		t.Logf("rotate with the COMMIT's answer lost: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
		mustContain(t, "rotate output", r.Stdout, "already sealed with the key in "+keyPath)
		opens := opensWithPostgres(t, direct, old)
		if opens[0] {
			t.Fatal("the rotation did not commit; the test expects it to")
		}
		// The key that opens the store must still be in the data dir:
		// master.key, or master.key.next for the next command to install.
		works(t, s)
		exactlyOne(t, "after recovery", opensWithPostgres(t, direct, readKey(t, keyPath)), 0)
	})

	t.Run("NewKeyFile", func(t *testing.T) {
		direct, viaDropper, d := storeURL(t)
		oldKey := e2etest.NewMasterKey()
		s := newSite(t, "PGRELAY_STORE="+direct, secret.MasterKeyEnv+"="+oldKey)
		create(s)
		newFile := filepath.Join(t.TempDir(), "new.key")
		r := s.with("PGRELAY_STORE="+viaDropper).run("master-key", "rotate", "--new-key-file", newFile)
		if !d.dropped.Load() {
			t.Fatalf("the COMMIT's answer was not dropped (exit %d):\n%s\n%s", r.Code, r.Stdout, r.Stderr)
		}
		t.Logf("rotate with the COMMIT's answer lost: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
		mustContain(t, "rotate output", r.Stdout, "already sealed with the key in "+newFile)
		if opensWithPostgres(t, direct, mustDecode(t, oldKey))[0] {
			t.Fatal("the rotation did not commit; the test expects it to")
		}
		newRaw, err := secret.ReadKeyFile(newFile)
		if err != nil {
			t.Fatalf("the key the store is now sealed with is gone: %v", err)
		}
		exactlyOne(t, "new key", opensWithPostgres(t, direct, newRaw), 0)
		works(t, s.with(secret.MasterKeyEnv+"="+secret.EncodeKey(newRaw)))
	})
}

func mustDecode(t *testing.T, key string) []byte {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
