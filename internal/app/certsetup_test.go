package app_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestCertificateSetupScriptWithOtherCA runs the certificate setup script
// of `bastion-setup` against a real sshd whose configuration already
// names a TrustedUserCAKeys file (another CA's): sshd reads only the first
// such line, so the script must add pgrelay's CA where sshd looks. After
// the script (and the reload it does) a certificate logs in.
func TestCertificateSetupScriptWithOtherCA(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs the setup script as root, as on a real bastion")
	}
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	f := newService(t)
	ctx := context.Background()
	if _, err := f.svc.InitSSHCA(ctx); err != nil {
		t.Fatal(err)
	}
	corp := writeFile(t, "corp_user_ca.pub", sshkey.AuthorizedKey(newCA(t).PublicKey(), "corp-ca")+"\n")
	b := testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{"TrustedUserCAKeys " + corp}})
	if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "certsetup", Host: pg.Host, Port: pg.Port,
		Database: db.Name, User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User, Auth: connection.SSHAuthCertificate}}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Query(ctx, "certsetup", "select 1", &rowsSink{}); err == nil {
		t.Fatal("certificate accepted before the setup script ran")
	}
	script, err := f.svc.BastionSetup(ctx, "certsetup")
	if err != nil {
		t.Fatal(err)
	}
	// The service manager reloads this sshd (the script's reload step).
	bin := t.TempDir()
	stub := fmt.Sprintf("#!/bin/sh\nkill -HUP \"$(cat %s)\"\n", b.File("sshd.pid"))
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	path := writeFile(t, "setup.sh", script)
	for range 2 { // it is safe to run more than once
		cmd := exec.Command("sh", path)
		cmd.Env = append(os.Environ(), "SSHD_CONFIG="+b.File("sshd_config"),
			"PATH="+bin+":/usr/sbin:/usr/bin:/sbin:/bin")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("setup script: %v\n%s", err, out)
		}
	}
	var sink rowsSink
	waitFor(t, 10*time.Second, func() bool {
		sink = rowsSink{}
		return f.svc.Query(ctx, "certsetup", "select 7", &sink) == nil
	})
	if sink.String() != "7" {
		t.Fatalf("query after the setup script: %q", sink.String())
	}
	ca, _ := f.svc.SSHCA(ctx)
	data, _ := os.ReadFile(corp)
	if n := strings.Count(string(data), ca.PublicKey); n != 1 {
		t.Fatalf("the CA file sshd reads has pgrelay's CA %d times, want once:\n%s", n, data)
	}
}

// TestCertificateSetupScriptReloadsNamedSSHD runs the certificate setup
// script for an sshd of its own configuration (SSHD_CONFIG), as a bastion
// runs next to the host's own sshd: the script must reload that sshd (the
// PidFile its configuration names), not the system's service, whether the
// service manager reloads the system's sshd (which is not this one) or
// there is none. Before, it reloaded ssh.service and said it was done, so
// the sshd that reads the configuration never trusted the CA; without
// systemd it failed on a pid file that does not exist.
func TestCertificateSetupScriptReloadsNamedSSHD(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs the setup script as root, as on a real bastion")
	}
	t.Parallel()
	for _, tc := range []struct{ name, systemctl string }{
		// systemctl reloads the host's own ssh.service, another sshd.
		{"system sshd under systemd", "#!/bin/sh\nexit 0\n"},
		// No service manager (a container), no /run/sshd.pid.
		{"no service manager", "#!/bin/sh\necho 'System has not been booted with systemd' >&2\nexit 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
			db := pg.NewDatabase(t)
			f := newService(t)
			ctx := context.Background()
			if _, err := f.svc.InitSSHCA(ctx); err != nil {
				t.Fatal(err)
			}
			// The configuration names a CA file (empty), so that the script
			// leaves /etc/ssh alone.
			caFile := writeFile(t, "user_ca.pub", "")
			b := testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{"TrustedUserCAKeys " + caFile}})
			if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "certreload", Host: pg.Host, Port: pg.Port,
				Database: db.Name, User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
				Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User, Auth: connection.SSHAuthCertificate}}); err != nil {
				t.Fatal(err)
			}
			script, err := f.svc.BastionSetup(ctx, "certreload")
			if err != nil {
				t.Fatal(err)
			}
			bin := t.TempDir()
			if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(tc.systemctl), 0o755); err != nil {
				t.Fatal(err)
			}
			path := writeFile(t, "setup.sh", script)
			cmd := exec.Command("sh", path)
			cmd.Env = append(os.Environ(), "SSHD_CONFIG="+b.File("sshd_config"),
				"PATH="+bin+":/usr/sbin:/usr/bin:/sbin:/bin")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("setup script: %v\n%s", err, out)
			}
			// sshd logs the reload (LogLevel VERBOSE), then listens again.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				data, _ := os.ReadFile(b.File("sshd.log"))
				if _, after, ok := strings.Cut(string(data), "Received SIGHUP"); ok && strings.Contains(after, "Server listening on") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the script did not reload the sshd of SSHD_CONFIG (no SIGHUP in its log within 10s)\n%s", b.LogTail())
				}
			}
			var sink rowsSink
			if err := f.svc.Query(ctx, "certreload", "select 7", &sink); err != nil || sink.String() != "7" {
				t.Fatalf("query after the setup script: %q, %v", sink.String(), err)
			}
		})
	}
}
