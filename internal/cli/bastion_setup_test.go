package cli_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestBastionSetupScript runs the script from `connection bastion-setup` on
// this machine (as root, like on a real bastion), then logs in through a
// production-like sshd (keys in ~/.ssh/authorized_keys, StrictModes yes,
// UsePAM no) with the connection's key.
func TestBastionSetupScript(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creates an OS user: needs root (CI runs as root)")
	}
	t.Parallel()
	name := fmt.Sprintf("pgrelay-t%d", os.Getpid()%1000000)
	t.Cleanup(func() {
		_ = exec.Command("userdel", "-r", name).Run()
		_ = exec.Command("groupdel", name).Run()
	})
	pg := sharedDB(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{SystemUser: name})

	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(append(createArgs("bs", pg), "--ssh-host", b.Host, "--ssh-port", fmt.Sprint(b.Port), "--ssh-user", name)...)
	r := h.fail(1, "query", "bs", "select 1")
	contains(t, "before setup", r.stderr, "not authorized")

	script := filepath.Join(t.TempDir(), "setup.sh")
	text := h.ok("connection", "bastion-setup", "bs").stdout
	// Its example copies and runs it on the bastion's own port.
	contains(t, "copy and run", text, fmt.Sprintf("scp -P %d setup.sh admin@%s: && ssh -p %d admin@%s sudo sh setup.sh", b.Port, b.Host, b.Port, b.Host))
	if err := os.WriteFile(script, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the script is idempotent
		out, err := exec.Command("sh", script).CombinedOutput()
		if err != nil {
			t.Fatalf("setup script: %v\n%s", err, out)
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("script did not create user: %v", err)
	}
	for path, mode := range map[string]os.FileMode{
		filepath.Join(u.HomeDir, ".ssh"):                 0o700 | os.ModeDir,
		filepath.Join(u.HomeDir, ".ssh/authorized_keys"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s mode = %v, want %v", path, fi.Mode(), mode)
		}
	}
	keys, _ := os.ReadFile(filepath.Join(u.HomeDir, ".ssh/authorized_keys"))
	if n := strings.Count(string(keys), "pgrelay:bs"); n != 1 {
		t.Errorf("authorized_keys has the key %d times after two runs:\n%s", n, keys)
	}
	if !strings.HasPrefix(string(keys), "restrict,port-forwarding,permitopen=") {
		t.Errorf("installed key is not restricted: %s", keys)
	}
	if f := shadowField(t, name); f != "*" {
		t.Errorf("shadow password field = %q, want * (unlocked, no password)", f)
	}
	r = h.run("query", "bs", "select current_user", "-o", "csv")
	if r.code != 0 {
		t.Fatalf("query after setup: %s\nsshd log:\n%s", r, b.LogTail())
	}
	contains(t, "query after setup", r.stdout, pg.User)
}

func shadowField(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Split(sc.Text(), ":")
		if len(parts) > 1 && parts[0] == name {
			return parts[1]
		}
	}
	t.Fatalf("%s not in /etc/shadow", name)
	return ""
}
