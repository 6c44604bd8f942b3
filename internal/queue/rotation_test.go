package queue_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestKeyRotationUnderSchedule rotates the key of a tunnelled connection
// while a scheduled job runs on it every two seconds: no run fails from
// `rotate-key --start` through installing the new key (with the old line
// replaced by one with expiry-time) to the promotion of the new key, and
// after; once the old line is removed, sshd refuses the old key.
func TestKeyRotationUnderSchedule(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	b := testenv.StartBastion(t, testenv.BastionOptions{})
	f := start(t, pg, nil)
	ctx := context.Background()
	svc := f.svc
	if _, err := svc.CreateConnection(ctx, connection.Spec{Name: "tun", Host: pg.Host, Port: pg.Port, Database: "postgres",
		User: pg.SuperUser, Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}}); err != nil {
		t.Fatal(err)
	}
	oldLine, err := svc.PublicKey(ctx, "tun", true)
	if err != nil {
		t.Fatal(err)
	}
	b.SetAuthorizedKeys(t, oldLine)
	oldKey := connectionKey(t, f.st, "tun")
	if _, err := svc.ApplyJobs(ctx, []jobs.Job{{Name: "tick", Connection: "tun", Schedule: "*/2 * * * * *",
		Timeout: connection.Duration(time.Minute), Steps: []jobs.Step{{SQL: "select 1"}}}}); err != nil {
		t.Fatal(err)
	}
	runs := func() []*jobs.Run {
		rs, err := svc.ListRuns(ctx, store.RunFilter{Job: "tick", Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	// waitRuns waits for n more runs that ended after since.
	waitRuns := func(what string, n int) {
		t.Helper()
		since := time.Now()
		deadline := since.Add(time.Duration(n)*2*time.Second + 20*time.Second)
		for {
			ended := 0
			for _, r := range runs() {
				if r.EndedAt != nil && r.EndedAt.After(since) {
					ended++
				}
			}
			if ended >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: only %d of %d runs ended", what, ended, n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitRuns("before the rotation", 1)

	rot, err := svc.RotateKeyStart(ctx, "tun", 0)
	if err != nil {
		t.Fatal(err)
	}
	waitRuns("with the new key not installed", 2)
	if v, _ := svc.GetConnection(ctx, "tun"); v.SSHTunnel.Rotation == nil || !v.SSHTunnel.Rotation.Pending {
		t.Fatal("the rotation ended before the new key was installed")
	}
	// The new line, and the old one with its expiry-time in its place.
	b.SetAuthorizedKeys(t, rot.Hops[0].Old, rot.Hops[0].Line)
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, _ := svc.GetConnection(ctx, "tun")
		if r := v.SSHTunnel.Rotation; r != nil && r.PromotedAt != nil && r.PromotedBy == "login" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new key was not promoted by a run's login: %+v", v.SSHTunnel.Rotation)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitRuns("after the promotion", 1)
	// The old line removed: the runs go on with the new key alone.
	b.SetAuthorizedKeys(t, rot.Hops[0].Line)
	waitRuns("after the old key was removed", 2)
	if err := b.Login(oldKey); err == nil {
		t.Fatal("sshd accepted the old key after its line was removed")
	}
	if err := svc.DeleteJob(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
	all := runs()
	succeeded := 0
	for _, r := range all {
		switch {
		case r.Status == jobs.Failed || r.Status == jobs.Cancelled:
			t.Errorf("run %s %s: %s", r.ID, r.Status, r.Reason)
		case r.Status == jobs.Succeeded:
			succeeded++
		}
	}
	if succeeded < 6 {
		t.Fatalf("only %d runs succeeded", succeeded)
	}
	log := b.Log()
	if !strings.Contains(log, "Accepted publickey for "+b.User) {
		t.Fatalf("sshd logged no login:\n%s", b.LogTail())
	}
}

// connectionKey opens the connection's current private key from the store
// (the fixture's keyring is all zeros).
func connectionKey(t *testing.T, st store.Store, name string) ssh.Signer {
	t.Helper()
	c, err := st.GetConnection(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := secret.NewKeyring(make([]byte, 32))
	pem, err := kr.Open(c.SealedPrivateKey, []byte("pgrelay/connection/"+c.ID+"/ssh_private_key"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sshkey.Signer(pem)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
