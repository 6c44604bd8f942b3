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
