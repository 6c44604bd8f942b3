package diagnose_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestSSHAlgorithmsAndPolicies: the ssh_handshake step shows what was
// negotiated; a bastion offering only SHA-1 algorithms fails there with
// the sshd_config setting to change; the approve host key policy stops a
// test at the handshake; and a database IP the network policy denies
// fails the forward step before the bastion is asked.
func TestSSHAlgorithmsAndPolicies(t *testing.T) {
	t.Parallel()
	var (
		pg              *testenv.Postgres
		good, kex, macs *testenv.Bastion
		wg              sync.WaitGroup
	)
	wg.Add(3)
	go func() { defer wg.Done(); good = testenv.SharedBastion(t, testenv.BastionOptions{}) }()
	go func() {
		defer wg.Done()
		kex = testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{"KexAlgorithms diffie-hellman-group14-sha1"}})
	}()
	go func() {
		defer wg.Done()
		macs = testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{"Ciphers aes128-ctr", "MACs hmac-sha1"}})
	}()
	pg = testenv.SharedPostgres(t, testenv.PostgresOptions{})
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	d := pg.NewDatabase(t)
	e := &env{pg: pg, bastion: good}
	e.signer, e.line = newKey(t)
	for _, b := range []*testenv.Bastion{good, kex, macs} {
		b.Authorize(t, e.line)
	}
	via := func(b *testenv.Bastion) connection.Spec {
		s := direct(pg, d.User, d.Password, d.Name, connection.SSLDisable)
		s.Tunnel = &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}
		return s
	}

	t.Run("Negotiated", func(t *testing.T) {
		t.Parallel()
		rep := run(t, e.input(via(good)))
		if !rep.OK {
			t.Fatalf("failed: %+v", rep.Failed())
		}
		n := rep.SSH
		if n == nil || n.KeyExchange == "" || n.HostKeyAlgorithm != ssh.KeyAlgoED25519 || n.Cipher != ssh.CipherAES128GCM ||
			!strings.HasPrefix(n.ServerVersion, "SSH-2.0-OpenSSH_") {
			t.Fatalf("negotiated = %+v", n)
		}
		d := rep.Step(diagnose.StepSSHHandshake).Detail
		for _, s := range []string{"negotiated key exchange " + n.KeyExchange, "host key ssh-ed25519", "cipher aes128-gcm@openssh.com", "server SSH-2.0-OpenSSH_"} {
			if !strings.Contains(d, s) {
				t.Errorf("handshake detail %q lacks %q", d, s)
			}
		}
		b, _ := json.Marshal(rep)
		for _, s := range []string{`"ssh":{"server_version":"SSH-2.0-OpenSSH_`, `"key_exchange":"` + n.KeyExchange + `"`, `"host_key_algorithm":"ssh-ed25519"`, `"cipher":"aes128-gcm@openssh.com"`} {
			if !strings.Contains(string(b), s) {
				t.Errorf("report JSON lacks %s", s)
			}
		}
	})

	for _, tc := range []struct {
		name    string
		b       *testenv.Bastion
		offered string
		setting string
	}{
		{"SHA1KeyExchange", kex, "diffie-hellman-group14-sha1", "KexAlgorithms"},
		{"SHA1MAC", macs, "hmac-sha1", "MACs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rep := run(t, e.input(via(tc.b)))
			f := failedAt(t, rep, diagnose.StepSSHHandshake, tc.offered, tc.setting, "reload sshd")
			if !strings.Contains(f.Error, "offers no") || !strings.Contains(f.Error, tc.offered) {
				t.Errorf("error = %q", f.Error)
			}
			if rep.Step(diagnose.StepBastionTCP).Status != diagnose.StatusOK || rep.SSH != nil {
				t.Errorf("bastion_tcp %s, negotiated %+v", rep.Step(diagnose.StepBastionTCP).Status, rep.SSH)
			}
		})
	}

	t.Run("ApproveHostKeys", func(t *testing.T) {
		t.Parallel()
		in := e.input(via(good))
		in.ApproveHostKeys = true
		rep := run(t, in)
		fp := sshkey.Fingerprint(good.HostKey)
		failedAt(t, rep, diagnose.StepSSHHandshake, "--host-key-policy approve", "pgrelay connection trust-host-key wh --fingerprint "+fp,
			"--ssh-known-host")
		if hk := rep.HostKey; hk == nil || hk.State != diagnose.HostKeyUnapproved || hk.Fingerprint != fp || hk.Key == nil {
			t.Fatalf("host key = %+v", rep.HostKey)
		}
		// With the key pinned the same policy lets it through.
		in.HostKeys = []ssh.PublicKey{good.HostKey}
		if rep := run(t, in); !rep.OK || rep.HostKey.State != diagnose.HostKeyPinned {
			t.Fatalf("pinned under approve: %+v", rep.Failed())
		}
	})

	// A pinned key of a type the bastion does not offer (it has only an
	// ed25519 host key) makes it present another of its keys: the step's
	// error, like its hint, says so and does not call it a mismatch.
	t.Run("PinnedKeyTypeNotOffered", func(t *testing.T) {
		t.Parallel()
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pinned, err := ssh.NewPublicKey(priv.Public())
		if err != nil {
			t.Fatal(err)
		}
		in := e.input(via(good))
		in.HostKeys = []ssh.PublicKey{pinned}
		rep := run(t, in)
		f := failedAt(t, rep, diagnose.StepSSHHandshake, "does not mean that its key changed", "HostKeyAlgorithms")
		for _, s := range []string{"did not present a pinned host key", "ssh-ed25519", "ecdsa-sha2-nistp256",
			sshkey.Fingerprint(pinned), sshkey.Fingerprint(good.HostKey)} {
			if !strings.Contains(f.Error, s) {
				t.Errorf("error %q lacks %q", f.Error, s)
			}
		}
		if strings.Contains(f.Error, "mismatch") {
			t.Errorf("error %q calls a key the bastion does not offer a mismatch", f.Error)
		}
	})

	t.Run("DeniedDatabaseBehindBastion", func(t *testing.T) {
		t.Parallel()
		in := e.input(via(good))
		in.Spec.Host = "127.0.0.2"
		ps, _ := egress.ParsePrefixes([]string{"127.0.0.2/32"})
		var err error
		if in.Network, err = egress.New(ps, nil); err != nil {
			t.Fatal(err)
		}
		rep := run(t, in)
		f := failedAt(t, rep, diagnose.StepForward, "--deny-network 127.0.0.2/32", "Nothing was sent to it")
		if !strings.Contains(f.Error, "127.0.0.2") || rep.Step(diagnose.StepSSHAuth).Status != diagnose.StatusOK {
			t.Errorf("forward: %+v", f)
		}
	})

	t.Run("MetadataAddressByDefault", func(t *testing.T) {
		t.Parallel()
		s := direct(pg, d.User, d.Password, d.Name, connection.SSLDisable)
		s.Host = "169.254.169.254"
		rep := run(t, e.input(s))
		f := failedAt(t, rep, diagnose.StepResolve, "metadata", "--allow-network 169.254.0.0/16")
		if !strings.Contains(f.Error, "169.254.169.254") || rep.Step(diagnose.StepTCP).Status != diagnose.StatusSkipped {
			t.Errorf("resolve: %+v", f)
		}
	})
}
