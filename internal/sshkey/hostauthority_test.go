package sshkey_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/sshkey"
)

func newKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestHostAuthorities(t *testing.T) {
	t.Parallel()
	ca, other, revoked := newKey(t), newKey(t), newKey(t)
	line := func(marker, pattern string, k ssh.PublicKey) string {
		return strings.TrimSpace(marker + " " + pattern + " " + sshkey.AuthorizedKey(k, "comment"))
	}
	lines, err := sshkey.ParseHostAuthorities(strings.Join([]string{
		"# host CAs",
		line("@cert-authority", "*.corp.example.com,!bad.corp.example.com", ca),
		line("@cert-authority", "[10.0.0.?]:2222", other),
		"",
		line("@revoked", "*", revoked),
	}, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	trust := sshkey.HostTrust{Lines: lines}
	for _, tc := range []struct {
		host string
		port int
		want []ssh.PublicKey
	}{
		{"b.corp.example.com", 22, []ssh.PublicKey{ca}},
		{"B.Corp.Example.com", 22, []ssh.PublicKey{ca}},
		{"bad.corp.example.com", 22, nil},          // negated
		{"b.corp.example.com", 2222, nil},          // another port needs [host]:port
		{"corp.example.com.evil.org", 22, nil},     // the pattern is anchored
		{"10.0.0.7", 2222, []ssh.PublicKey{other}}, // ? and [host]:port
		{"10.0.0.17", 2222, nil},
	} {
		got := trust.Authorities(tc.host, tc.port)
		if len(got) != len(tc.want) || (len(got) == 1 && string(got[0].Marshal()) != string(tc.want[0].Marshal())) {
			t.Errorf("Authorities(%s, %d) = %d keys, want %d", tc.host, tc.port, len(got), len(tc.want))
		}
	}
	// As ssh matches known_hosts, a pattern is matched against the host's
	// name there: "*" covers every port ([host]:port included), a pattern
	// for port 22 does not cover another.
	any, err := sshkey.ParseHostAuthorities(line("@cert-authority", "*", ca) + "\n" +
		line("@cert-authority", "[*.example.org]:*", other))
	if err != nil {
		t.Fatal(err)
	}
	anyTrust := sshkey.HostTrust{Lines: any}
	for _, tc := range []struct {
		host string
		port int
		want int
	}{
		{"bastion.example.com", 22, 1},
		{"127.0.0.1", 52222, 1},
		{"::1", 2222, 1},
		{"b.example.org", 2222, 2},
		{"b.example.org", 22, 1}, // [host]:port names only other ports than 22
	} {
		if got := anyTrust.Authorities(tc.host, tc.port); len(got) != tc.want {
			t.Errorf("with \"*\": Authorities(%s, %d) = %d keys, want %d", tc.host, tc.port, len(got), tc.want)
		}
	}
	if !trust.Revoked(revoked) || trust.Revoked(ca) {
		t.Error("Revoked")
	}
	cert := &ssh.Certificate{Key: revoked}
	if !trust.Revoked(cert) {
		t.Error("a certificate of a revoked key is not revoked")
	}
	if got := lines[0].String(); !strings.HasPrefix(got, "@cert-authority *.corp.example.com,!bad.corp.example.com ssh-ed25519 ") {
		t.Errorf("String() = %q", got)
	}

	// Refusals say what is accepted.
	for _, bad := range []string{
		sshkey.AuthorizedKey(ca, ""),                    // no marker, no pattern
		"b.example.com " + sshkey.AuthorizedKey(ca, ""), // a plain line: pin it instead
		"@cert-authority |1|abc|def " + sshkey.AuthorizedKey(ca, ""),
		"@cert-authority ! " + sshkey.AuthorizedKey(ca, ""),
		"@unknown * " + sshkey.AuthorizedKey(ca, ""),
	} {
		if _, err := sshkey.ParseHostAuthorities(bad); err == nil || !strings.Contains(err.Error(), "@cert-authority") {
			t.Errorf("ParseHostAuthorities(%q) = %v, want a refusal naming what is accepted", bad, err)
		}
	}
	// A server's known_hosts file takes plain lines too.
	file, err := sshkey.ParseKnownHostsFile([]byte("bastion.example.com " + sshkey.AuthorizedKey(other, "") + "\n" +
		line("@revoked", "*", revoked) + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	ft := sshkey.HostTrust{Lines: file}
	if keys := ft.Keys("bastion.example.com", 22); len(keys) != 1 || !ft.Revoked(revoked) {
		t.Fatalf("known_hosts file: %d keys", len(keys))
	}
}

func TestExpiryLines(t *testing.T) {
	t.Parallel()
	k := newKey(t)
	restricted := sshkey.RestrictedTo(k, "pgrelay:wh", sshkey.PermitOpen("2001:db8::1", 22))
	if !strings.HasPrefix(restricted, `restrict,port-forwarding,permitopen="[2001:db8::1]:22" ssh-ed25519 `) {
		t.Fatalf("RestrictedTo = %q", restricted)
	}
	at := mustTime(t, "2030-01-02T03:04:05Z")
	if got := sshkey.WithExpiry(restricted, at); !strings.HasPrefix(got, `expiry-time="20300102030405Z",restrict,port-forwarding,`) {
		t.Fatalf("WithExpiry(restricted) = %q", got)
	}
	if got := sshkey.WithExpiry(sshkey.AuthorizedKey(k, ""), at); !strings.HasPrefix(got, `expiry-time="20300102030405Z" ssh-ed25519 `) {
		t.Fatalf("WithExpiry(plain) = %q", got)
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
