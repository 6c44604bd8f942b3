package cli_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// TestAuditCommands: local commands are recorded with the OS user as
// actor; audit list filters and prints JSON; export writes JSON lines; a
// record edited or deleted in the store makes `audit verify` fail and name
// the first broken record.
func TestAuditCommands(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("connection", "create", "wh", "--host", "127.0.0.1", "--port", "5432", "--database", "d", "--user", "u")
	h.ok("connection", "create", "crm", "--host", "127.0.0.1", "--port", "5432", "--database", "d", "--user", "u")
	contains(t, "local token create", h.ok("token", "create", "--role", "viewer", "--name", "dash").stdout,
		"export PGRELAY_SERVER=<URL of pgrelay serve")
	h.ok("connection", "delete", "crm", "--yes")

	var recs []audit.Record
	if err := json.Unmarshal([]byte(h.ok("audit", "list", "-o", "json").stdout), &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 || recs[0].Action != "connection.delete" || recs[3].Action != "connection.create" || recs[3].Target != "wh" {
		t.Fatalf("records: %+v", recs)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if recs[0].Actor != (audit.Actor{Kind: audit.ActorLocal, ID: me.Uid, Name: me.Username}) {
		t.Fatalf("actor %+v, want the local user %s", recs[0].Actor, me.Username)
	}
	if out := h.ok("audit", "list", "--target", "connection:wh").stdout; !strings.Contains(out, "connection.create") ||
		strings.Contains(out, "crm") || !strings.Contains(out, "local "+me.Username) {
		t.Fatalf("list by target:\n%s", out)
	}
	if out := h.ok("audit", "list", "--action", "token").stdout; !strings.Contains(out, "token.create") || strings.Contains(out, "connection.") {
		t.Fatalf("list by action:\n%s", out)
	}
	h.fail(2, "audit", "list", "--since", "yesterday")
	r := h.ok("audit", "export", "--after-seq", "1")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 3 || !strings.Contains(r.stderr, "--after-seq 4") {
		t.Fatalf("export: %s", r)
	}
	if out := h.ok("audit", "verify").stdout; !strings.Contains(out, "intact: 4 records") {
		t.Fatalf("verify: %s", out)
	}

	// Tamper with the file as someone with access to it could.
	db, err := sql.Open("sqlite", filepath.Join(h.dataDir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string) {
		t.Helper()
		if _, err := db.ExecContext(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	exec(`DROP TRIGGER audit_log_append_only`)
	exec(`UPDATE audit_log SET actor_name = 'someone-else' WHERE seq = 3`)
	r = h.fail(1, "audit", "verify")
	if !strings.Contains(r.stderr, "broken at record 3") || !strings.Contains(r.stderr, "changed") {
		t.Fatalf("verify after an edit: %s", r)
	}
	exec(`DELETE FROM audit_log WHERE seq = 2`)
	r = h.fail(1, "audit", "verify")
	if !strings.Contains(r.stderr, "broken at record 2") || !strings.Contains(r.stderr, "missing") {
		t.Fatalf("verify after a deletion: %s", r)
	}
}

// TestAuditExportEscapesControls: `audit export` writes the C1 controls
// (U+0080 to U+009F, such as U+009B, an 8-bit CSI) and DEL of a record
// (here the fingerprint someone asked to trust, and a command's
// arguments) as \u escapes, as every JSON output does, so that exporting
// to a terminal does not drive it; they were written raw. The lines read
// back to the same records: each still matches its hash, and the chain
// still verifies, locally and through a server.
func TestAuditExportEscapesControls(t *testing.T) {
	t.Parallel()
	const fingerprint = "SHA256:\u009b2J\u0085\u009d0;title\a\x7fend"
	for _, mode := range []string{"local", "remote"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			if mode == "remote" {
				srv := apitest.Start(t, apitest.Options{})
				h.env["PGRELAY_SERVER"] = srv.URL
				h.env["PGRELAY_TOKEN"] = srv.AdminToken
			}
			h.ok("connection", "create", "wh", "--host", "127.0.0.1", "--port", "5432", "--database", "d", "--user", "u")
			if r := h.run("connection", "trust-host-key", "wh", "--fingerprint", fingerprint); r.code == 0 {
				t.Fatalf("trust-host-key without a pending key succeeded: %s", r)
			}
			if mode == "local" {
				if r := h.run("exec", "nosuch", "--", "printf", "\u009b31mred\u0085"); r.code == 0 {
					t.Fatalf("exec over a missing connection succeeded: %s", r)
				}
			}

			r := h.ok("audit", "export")
			if i := bytes.IndexFunc([]byte(r.stdout), func(c rune) bool { return c == 0x7f || (c >= 0x80 && c <= 0x9f) }); i >= 0 {
				t.Fatalf("export has a control character at byte %d:\n%q", i, r.stdout)
			}
			contains(t, "export", r.stdout, `\u009b2J\u0085\u009d0;title\u0007\u007fend`)
			var trust, exec bool
			for line := range strings.Lines(r.stdout) {
				var rec audit.Record
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("export line %q: %v", line, err)
				}
				norm := rec
				norm.Normalize()
				if got := audit.ComputeHash(&norm); got != rec.Hash {
					t.Errorf("exported record %d does not match its hash %s (%s): %q", rec.Seq, rec.Hash, got, line)
				}
				trust = trust || rec.Detail == "host key "+fingerprint
				exec = exec || rec.Use != nil && len(rec.Use.Commands) == 1 &&
					strings.Join(rec.Use.Commands[0], " ") == "printf \u009b31mred\u0085"
			}
			if !trust || exec != (mode == "local") {
				t.Errorf("export lacks the records with the controls (trust %t, exec %t):\n%s", trust, exec, r.stdout)
			}
			contains(t, "verify", h.ok("audit", "verify").stdout, "Audit log intact")
		})
	}
}
