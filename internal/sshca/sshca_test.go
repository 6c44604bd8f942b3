package sshca_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/sshca"
)

func TestLocalSigner(t *testing.T) {
	t.Parallel()
	priv, pub, err := sshca.Generate()
	if err != nil {
		t.Fatal(err)
	}
	s, err := sshca.NewLocalSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	if string(s.PublicKey().Marshal()) != string(pub.Marshal()) {
		t.Fatal("signer's public key is not the CA's")
	}
	var _ sshca.Signer = s
	userPub, _, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(userPub)
	now := time.Unix(1_800_000_000, 0)
	after, before := sshca.Validity(now, now, now.Add(2*time.Hour))
	ctx := context.Background()
	cert, err := s.SignUser(ctx, sshca.Request{Key: key, Principal: "jump",
		KeyID: sshca.KeyID("wh", "run-1", 2, 3), ValidAfter: after, ValidBefore: before})
	if err != nil {
		t.Fatal(err)
	}
	if cert.CertType != ssh.UserCert || len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != "jump" {
		t.Fatalf("cert %+v", cert)
	}
	if cert.KeyId != "pgrelay connection=wh run=run-1 hop=2/3" {
		t.Fatalf("key id %q", cert.KeyId)
	}
	if len(cert.Extensions) != 1 || cert.Extensions["permit-port-forwarding"] != "" || len(cert.CriticalOptions) != 0 {
		t.Fatalf("permissions %+v: want only permit-port-forwarding", cert.Permissions)
	}
	if time.Unix(int64(cert.ValidAfter), 0) != now.Add(-time.Minute) || time.Unix(int64(cert.ValidBefore), 0) != now.Add(2*time.Hour+5*time.Minute) {
		t.Fatalf("validity %d..%d", cert.ValidAfter, cert.ValidBefore)
	}
	// x/crypto's checker accepts it for the principal, as sshd would.
	checker := ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool { return string(k.Marshal()) == string(pub.Marshal()) },
		Clock: func() time.Time { return now }}
	if err := checker.CheckCert("jump", cert); err != nil {
		t.Fatalf("CheckCert: %v", err)
	}
	if err := checker.CheckCert("root", cert); err == nil {
		t.Fatal("the certificate is valid for another principal")
	}
	// Without a deadline: an hour and the margin. A clock behind the wall
	// clock moves the validity with it.
	_, b := sshca.Validity(now.Add(-time.Hour), now, time.Time{})
	if !b.Equal(now.Add(5 * time.Minute)) {
		t.Fatalf("validity without deadline ends %v", b)
	}
	if _, err := s.SignUser(context.Background(), sshca.Request{Key: key, Principal: "jump", ValidAfter: now, ValidBefore: now}); err == nil {
		t.Fatal("an empty validity was signed")
	}
}

// countingSigner counts the certificates it is asked for.
type countingSigner struct {
	sshca.Signer
	asked int
}

func (c *countingSigner) SignUser(ctx context.Context, req sshca.Request) (*ssh.Certificate, error) {
	c.asked++
	return c.Signer.SignUser(ctx, req)
}

// TestRestrict: a restricted signer signs for the principals of its list
// only, compared exactly; any other is refused before the CA is asked.
func TestRestrict(t *testing.T) {
	t.Parallel()
	priv, _, err := sshca.Generate()
	if err != nil {
		t.Fatal(err)
	}
	local, err := sshca.NewLocalSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	inner := &countingSigner{Signer: local}
	s := sshca.Restrict(inner, []string{"dbtcloud", "etl"})
	if string(s.PublicKey().Marshal()) != string(local.PublicKey().Marshal()) {
		t.Fatal("a restricted signer's public key is not its CA's")
	}
	userPub, _, _ := ed25519.GenerateKey(rand.Reader)
	key, _ := ssh.NewPublicKey(userPub)
	now := time.Now()
	req := func(principal string) sshca.Request {
		return sshca.Request{Key: key, Principal: principal, KeyID: "k", ValidAfter: now, ValidBefore: now.Add(time.Hour)}
	}
	if cert, err := s.SignUser(context.Background(), req("etl")); err != nil || cert.ValidPrincipals[0] != "etl" {
		t.Fatalf("allowed principal: %v %v", cert, err)
	}
	for _, p := range []string{"root", "ETL", "etl ", "dbtcloud,root", ""} {
		_, err := s.SignUser(context.Background(), req(p))
		var na *sshca.PrincipalNotAllowedError
		if !errors.As(err, &na) || na.Principal != p || !strings.Contains(err.Error(), "dbtcloud, etl") {
			t.Fatalf("principal %q: %v, want PrincipalNotAllowedError naming the allowed ones", p, err)
		}
	}
	if inner.asked != 1 {
		t.Fatalf("the CA was asked %d times, want once (for the allowed principal)", inner.asked)
	}
	if _, err := sshca.Restrict(local, nil).SignUser(context.Background(), req("etl")); err == nil {
		t.Fatal("an empty list signed")
	}
}
