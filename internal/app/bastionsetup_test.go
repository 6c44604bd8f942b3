package app_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// setupUser names a tunnel user that the setup script under test creates
// on this machine, and removes it with its home when the test ends. It
// skips the test when not run as root.
func setupUser(t *testing.T, tag string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("runs the bastion setup script, which creates an OS user: needs root (CI runs as root)")
	}
	name := fmt.Sprintf("pgs%s%d", tag, os.Getpid()%100000)
	t.Cleanup(func() {
		_ = exec.Command("userdel", "-r", name).Run()
		_ = exec.Command("groupdel", name).Run()
	})
	return name
}

// runSetup runs a bastion setup script as root, as on a real bastion.
func runSetup(t *testing.T, script string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "setup.sh")
	if err := os.WriteFile(p, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", p).CombinedOutput(); err != nil {
		t.Fatalf("setup script: %v\n%s", err, out)
	}
}

// authorizedKeys returns the path of name's authorized_keys.
func authorizedKeys(t *testing.T, name string) string {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("the setup script did not create user %s: %v", name, err)
	}
	return filepath.Join(u.HomeDir, ".ssh", "authorized_keys")
}

// keyLinesOf returns the lines of the authorized_keys file at path that
// hold the public key of sg.
func keyLinesOf(t *testing.T, path string, sg ssh.Signer) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blob := strings.Fields(sshkey.AuthorizedKey(sg.PublicKey(), ""))[1]
	var out []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.Contains(l, " "+blob) {
			out = append(out, l)
		}
	}
	return out
}

// forward logs in to b as u with sg and opens a forward to addr through
// it, returning sshd's answer.
func forward(t *testing.T, b *testenv.Bastion, u string, sg ssh.Signer, addr string) error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(conn, b.Addr(), &ssh.ClientConfig{User: u,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(sg)}, HostKeyCallback: ssh.FixedHostKey(b.HostKey)})
	if err != nil {
		t.Fatalf("login to %s as %s: %v\n%s", b.Addr(), u, err, b.LogTail())
	}
	cl := ssh.NewClient(c, chans, reqs)
	defer cl.Close()
	fc, err := cl.Dial("tcp", addr)
	if err == nil {
		fc.Close()
	}
	return err
}

// TestBastionSetupReplacesOtherLinesOfKey runs the setup script on a
// production-like sshd where the connection's key is already installed
// as its plain line (as `connection create` shows it): sshd goes by the
// first line of a key, so the script must put its restricted line in
// place of that one, not after it; and after the database moves to
// another port, running the script again must make the new permitopen
// the one in effect.
func TestBastionSetupReplacesOtherLinesOfKey(t *testing.T) {
	name := setupUser(t, "r")
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{SystemUser: name})
	f := newService(t)
	ctx := context.Background()
	v, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "bsr", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: name}})
	if err != nil {
		t.Fatal(err)
	}
	script, err := f.svc.BastionSetup(ctx, "bsr")
	if err != nil {
		t.Fatal(err)
	}
	runSetup(t, script)
	keys := authorizedKeys(t, name)
	// The admin had pasted the plain key before running the script.
	if err := os.WriteFile(keys, []byte(v.SSHTunnel.PublicKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		runSetup(t, script)
	}
	k := currentKey(t, f.store, "bsr")
	restricted, _ := f.svc.PublicKey(ctx, "bsr", true)
	if got := keyLinesOf(t, keys, k); len(got) != 1 || got[0] != restricted {
		t.Errorf("lines of the key after the script: %q, want only %q", got, restricted)
	}
	if err := forward(t, b, name, k, b.Addr()); err == nil {
		t.Fatalf("sshd let the key forward to %s after the setup script restricted it to %s", b.Addr(), pg.Addr())
	}
	if err := f.svc.Query(ctx, "bsr", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query after setup: %v\n%s", err, b.LogTail())
	}

	// The database moves to another port; the script, run again, allows it.
	port := testenv.TCPRelay(t, pg.Host, pg.Addr())
	s := v.Spec()
	s.Port = port
	pw := secret.New(db.Password)
	if _, err := f.svc.UpdateConnection(ctx, "bsr", s, &pw); err != nil {
		t.Fatal(err)
	}
	if script, err = f.svc.BastionSetup(ctx, "bsr"); err != nil {
		t.Fatal(err)
	}
	runSetup(t, script)
	if got := keyLinesOf(t, keys, k); len(got) != 1 || !strings.Contains(got[0], fmt.Sprintf(`permitopen="%s:%d"`, pg.Host, port)) {
		t.Errorf("lines of the key after the port changed: %q, want one with permitopen to port %d", got, port)
	}
	if err := f.svc.Query(ctx, "bsr", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query after the database moved to port %d and the script ran again: %v\n%s", port, err, b.LogTail())
	}

	// Permissions narrower than 700 and 600 stay as they are.
	dir := filepath.Dir(keys)
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keys, 0o400); err != nil {
		t.Fatal(err)
	}
	runSetup(t, script)
	for path, want := range map[string]os.FileMode{dir: 0o500 | os.ModeDir, keys: 0o400} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != want {
			t.Errorf("%s after the script: %v %v, want mode %v (never widened)", path, fi.Mode(), err, want)
		}
	}
	if err := f.svc.Query(ctx, "bsr", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query with ~/.ssh 500 and authorized_keys 400: %v\n%s", err, b.LogTail())
	}
}

// TestBastionSetupDuringKeyRotation runs the setup script at each phase
// of a key rotation with two live keys on a production-like sshd: while
// it is pending the script installs the new key and the old key's line
// with its expiry-time (the time `rotate-key --start` prints, in the
// host's local time: see TestBastionSetupExpiryInLocalTime), and running it
// again keeps that expiry (sshd would honour a plain line of the old key
// after an expired one); after a cancel it puts the current key's line
// back without expiry-time, so that the only key does not expire.
func TestBastionSetupDuringKeyRotation(t *testing.T) {
	name := setupUser(t, "k")
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{SystemUser: name})
	f := newService(t)
	ctx := context.Background()
	svc := f.svc
	if _, err := svc.CreateConnection(ctx, connection.Spec{Name: "bsk", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: name}}); err != nil {
		t.Fatal(err)
	}
	setup := func() {
		t.Helper()
		script, err := svc.BastionSetup(ctx, "bsk")
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			runSetup(t, script)
		}
	}
	setup()
	keys := authorizedKeys(t, name)
	if err := svc.Query(ctx, "bsk", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query after setup: %v\n%s", err, b.LogTail())
	}
	old := currentKey(t, f.store, "bsk")
	restricted, _ := svc.PublicKey(ctx, "bsk", true)
	// oldLine is the old key's line the script writes: in this process's
	// zone, which the script and sshd inherit.
	oldLine := func(rot *app.KeyRotation) string {
		return sshkey.WithExpiryValue(restricted, sshdExpiry(*rot.OldKeyExpiresAt, time.Local))
	}

	// A cancelled rotation: the old line had been given its expiry.
	rot, err := svc.RotateKeyStart(ctx, "bsk", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	setup()
	if got := keyLinesOf(t, keys, old); len(got) != 1 || got[0] != oldLine(rot) {
		t.Fatalf("old key's lines while the rotation is pending: %q, want only %q", got, oldLine(rot))
	}
	if _, err := svc.RotateKeyCancel(ctx, "bsk"); err != nil {
		t.Fatal(err)
	}
	setup()
	if got := keyLinesOf(t, keys, old); len(got) != 1 || got[0] != restricted {
		t.Fatalf("current key's lines after the rotation was cancelled: %q, want only %q (no expiry-time)", got, restricted)
	}

	// A rotation run to its end with the script.
	if rot, err = svc.RotateKeyStart(ctx, "bsk", 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	// With only the old key on the bastion, logins fall back to it.
	if err := svc.Query(ctx, "bsk", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query while the new key is not installed: %v", err)
	}
	setup()
	if got := keyLinesOf(t, keys, old); len(got) != 1 || got[0] != oldLine(rot) {
		t.Fatalf("old key's lines after the script during the rotation: %q, want only %q", got, oldLine(rot))
	}
	c, _ := f.store.GetConnection(ctx, "bsk")
	newKey := openSealedKey(t, c.SealedPendingPrivateKey, "pgrelay/connection/"+c.ID+"/ssh_pending_private_key")
	if got := keyLinesOf(t, keys, newKey); len(got) != 1 || got[0] != rot.Hops[0].Line {
		t.Fatalf("new key's lines after the script during the rotation: %q, want only %q", got, rot.Hops[0].Line)
	}
	// The old line is live until its expiry-time.
	if err := b.Login(old); err != nil {
		t.Fatalf("old key refused before its expiry-time: %v", err)
	}
	if err := svc.Query(ctx, "bsk", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query after the new key was installed: %v\n%s", err, b.LogTail())
	}
	v, _ := svc.GetConnection(ctx, "bsk")
	if r := v.SSHTunnel.Rotation; r == nil || r.Pending || r.PromotedAt == nil {
		t.Fatalf("rotation after the script installed the new key: %+v, want it promoted", r)
	}
	// After the promotion the script keeps the new key and leaves the old
	// key's line with its expiry.
	setup()
	if got := keyLinesOf(t, keys, old); len(got) != 1 || got[0] != oldLine(rot) {
		t.Errorf("old key's lines after the script once the rotation ended: %q, want only %q", got, oldLine(rot))
	}
	if got := keyLinesOf(t, keys, newKey); len(got) != 1 || got[0] != rot.Hops[0].Line {
		t.Errorf("new key's lines after the script once the rotation ended: %q, want only %q", got, rot.Hops[0].Line)
	}
	if err := svc.Query(ctx, "bsk", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query after the rotation: %v\n%s", err, b.LogTail())
	}
	// This sshd (9.2) honours the expiry-time as rotate-key prints it (UTC,
	// "…Z"): once it has passed, the old key is refused and the new one
	// still logs in.
	expired := sshkey.WithExpiry(restricted, time.Now().Add(-time.Minute))
	if err := os.WriteFile(keys, []byte(expired+"\n"+rot.Hops[0].Line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Login(old); err == nil {
		t.Errorf("sshd accepted the old key after its expiry-time: %s", expired)
	}
	if err := svc.Query(ctx, "bsk", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query after the old key expired: %v\n%s", err, b.LogTail())
	}
}
