package sshkey_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pgrelay/pgrelay/internal/sshkey"
)

func TestParseKnownHosts(t *testing.T) {
	t.Parallel()
	pair, err := sshkey.Generate(sshkey.Ed25519, "")
	if err != nil {
		t.Fatal(err)
	}
	ed := sshkey.AuthorizedKey(pair.Public, "root@bastion")
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPub, _ := ssh.NewPublicKey(&ec.PublicKey)
	ecLine := sshkey.AuthorizedKey(ecPub, "")
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallPub, _ := ssh.NewPublicKey(&small.PublicKey)

	for _, tc := range []struct {
		name, text string
		host       string
		port       int
		keys       int
		problem    string // "" when accepted
	}{
		{"pub file line", ed, "b.example.com", 22, 1, ""},
		{"known_hosts line", "b.example.com " + ed, "b.example.com", 22, 1, ""},
		{"known_hosts several names", "other,B.Example.com,10.0.0.5 " + ed, "b.example.com", 22, 1, ""},
		{"known_hosts with port", "[b.example.com]:2222 " + ed, "b.example.com", 2222, 1, ""},
		{"hashed name of the bastion", knownhosts.HashHostname("b.example.com") + " " + ed, "b.example.com", 22, 1, ""},
		{"hashed name with port", knownhosts.HashHostname("[b.example.com]:2222") + " " + ed, "b.example.com", 2222, 1, ""},
		{"hashed name of another host", knownhosts.HashHostname("a.example.com") + " " + ed, "b.example.com", 22, 0, "1 hashed name(s) of other hosts"},
		{"hashed name for port 22 only", knownhosts.HashHostname("b.example.com") + " " + ed, "b.example.com", 2222, 0, "names [b.example.com]:2222"},
		{"matching pattern", "*.example.com " + ed, "b.example.com", 22, 1, ""},
		{"any host, another port", "* " + ed, "127.0.0.1", 52221, 1, ""}, // as ssh-keygen -F '[127.0.0.1]:52221' finds it
		{"pattern for port 22 only", "*.example.com " + ed, "b.example.com", 2222, 0, "names [b.example.com]:2222"},
		{"pattern for another domain", "*.other.org " + ed, "b.example.com", 22, 0, "for *.other.org, not for this bastion"},
		{"negated bastion", "!b.example.com,* " + ed, "b.example.com", 22, 0, "excludes this bastion"},
		{"ssh-keyscan output", "# b.example.com:22 SSH-2.0-OpenSSH_9.2\nb.example.com " + ed + "\n\nb.example.com " + ecLine + "\n", "b.example.com", 22, 2, ""},
		{"wrong host", "a.example.com " + ed, "b.example.com", 22, 0, "for a.example.com, not for this bastion, which known_hosts names b.example.com"},
		{"wrong port", "b.example.com " + ed, "b.example.com", 2222, 0, "which known_hosts names [b.example.com]:2222"},
		{"fingerprint", sshkey.Fingerprint(pair.Public), "b", 22, 0, "is a fingerprint, which cannot be pinned"},
		{"garbage", "hello world", "b", 22, 0, "neither a public key nor a known_hosts line"},
		{"bad base64", "ssh-ed25519 AAAA!!!", "b", 22, 0, "not a valid public key"},
		{"revoked", "@revoked b " + ed, "b", 22, 0, "marker @revoked"},
		{"small rsa", sshkey.AuthorizedKey(smallPub, ""), "b", 22, 0, "1024 bits: at least 2048"},
		{"empty", " \n# only a comment\n", "b", 22, 0, "no host key found"},
		{"too long", strings.Repeat("x", sshkey.MaxKnownHostLen+1), "b", 22, 0, "too long"},
		{"line numbers", ed + "\nnonsense\n", "b", 22, 0, `line 2: "nonsense" is neither`},
	} {
		keys, err := sshkey.ParseKnownHosts(tc.text, tc.host, tc.port)
		if tc.problem == "" {
			if err != nil || len(keys) != tc.keys {
				t.Errorf("%s: %d keys, %v; want %d keys", tc.name, len(keys), err, tc.keys)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted, want %q", tc.name, tc.problem)
			continue
		}
		if !strings.Contains(err.Error(), tc.problem) || !strings.Contains(err.Error(), "accepted is") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %q lacks %q or what is accepted", tc.name, err, tc.problem)
		}
	}
	keys, err := sshkey.ParseKnownHosts(ed, "b", 22)
	if err != nil || sshkey.Fingerprint(keys[0]) != sshkey.Fingerprint(pair.Public) {
		t.Errorf("parsed key differs: %v", err)
	}
}

// TestParseKnownHostsPrivateKey: a private key pasted where the public
// one belongs is refused without any piece of it in the error.
func TestParseKnownHostsPrivateKey(t *testing.T) {
	t.Parallel()
	pair, err := sshkey.Generate(sshkey.Ed25519, "k")
	if err != nil {
		t.Fatal(err)
	}
	pemText := string(pair.PrivatePEM)
	_, err = sshkey.ParseKnownHosts(pemText, "bastion", 22)
	if err == nil || !strings.Contains(err.Error(), "this is a private key") {
		t.Fatalf("private key: %v", err)
	}
	for _, line := range strings.Split(pemText, "\n") {
		if len(line) > 8 && !strings.HasPrefix(line, "-----") && strings.Contains(err.Error(), line[:8]) {
			t.Fatalf("the error holds a piece of the private key: %v", err)
		}
	}
}
