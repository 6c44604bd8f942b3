package tunnel_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// TestNegotiatedAlgorithms checks what a tunnel to a stock OpenSSH settles
// on, and that the hook sees the same before authentication ends.
func TestNegotiatedAlgorithms(t *testing.T) {
	t.Parallel()
	b := setup(t, testenv.BastionOptions{})
	cfg := b.cfg
	var hooked []tunnel.Negotiated
	cfg.OnNegotiated = func(n tunnel.Negotiated) { hooked = append(hooked, n) }
	tun := dial(t, cfg)

	n := tun.Negotiated()
	t.Logf("negotiated: %s", n)
	if !strings.HasPrefix(n.ServerVersion, "SSH-2.0-OpenSSH_") {
		t.Errorf("ServerVersion = %q, want SSH-2.0-OpenSSH_...", n.ServerVersion)
	}
	if n.KeyExchange != ssh.KeyExchangeMLKEM768X25519 && n.KeyExchange != ssh.KeyExchangeCurve25519 {
		t.Errorf("KeyExchange = %q, want mlkem768x25519-sha256 or curve25519-sha256", n.KeyExchange)
	}
	if n.HostKeyAlgorithm != ssh.KeyAlgoED25519 {
		t.Errorf("HostKeyAlgorithm = %q, want %s (the bastion's key)", n.HostKeyAlgorithm, ssh.KeyAlgoED25519)
	}
	if n.Cipher != ssh.CipherAES128GCM || n.MAC != "" {
		t.Errorf("Cipher, MAC = %q, %q; want %s and no MAC", n.Cipher, n.MAC, ssh.CipherAES128GCM)
	}
	if len(hooked) != 1 || hooked[0] != n {
		t.Errorf("OnNegotiated saw %v, want once %v", hooked, n)
	}
	for _, s := range []string{"key exchange " + n.KeyExchange, "host key ssh-ed25519", "cipher aes128-gcm@openssh.com", "server SSH-2.0-OpenSSH_"} {
		if !strings.Contains(n.String(), s) {
			t.Errorf("String() = %q lacks %q", n.String(), s)
		}
	}
}

// TestInsecureBastionRefused: a bastion that offers only algorithms that
// x/crypto's defaults still accept (SHA-1 key exchange, SHA-1 MACs) is
// refused, with an error naming what it offered and the setting to change.
func TestInsecureBastionRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		config  []string
		what    string
		offered string
		setting string
	}{
		{"kex", []string{"KexAlgorithms diffie-hellman-group14-sha1"}, "key exchange", "diffie-hellman-group14-sha1", "KexAlgorithms"},
		{"mac", []string{"Ciphers aes128-ctr", "MACs hmac-sha1"}, "MAC", "hmac-sha1", "MACs"},
		{"mac96", []string{"Ciphers aes256-ctr", "MACs hmac-sha1-96"}, "MAC", "hmac-sha1-96", "MACs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, testenv.BastionOptions{ExtraConfig: tc.config})
			// The bastion is up and x/crypto's defaults would take it.
			if err := defaultClientHandshake(b.bastion.Addr()); err != nil {
				t.Fatalf("x/crypto's default client cannot talk to the bastion either: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			tun, err := tunnel.Dial(ctx, b.cfg)
			if err == nil {
				_ = tun.Close()
				t.Fatalf("Dial to a bastion offering only %v succeeded (negotiated %s)", tc.config, tun.Negotiated())
			}
			t.Logf("refused: %v", err)
			var hs *tunnel.HandshakeError
			var algErr *tunnel.AlgorithmError
			if !errors.As(err, &hs) || !errors.As(err, &algErr) {
				t.Fatalf("Dial = %v (%T), want a *HandshakeError caused by an *AlgorithmError", err, err)
			}
			if algErr.What != tc.what || !slices.Contains(algErr.Offered, tc.offered) {
				t.Errorf("AlgorithmError = %s %v, want %s offering %s", algErr.What, algErr.Offered, tc.what, tc.offered)
			}
			if !strings.HasPrefix(algErr.ServerVersion, "SSH-2.0-OpenSSH_") {
				t.Errorf("ServerVersion = %q", algErr.ServerVersion)
			}
			msg := err.Error()
			for _, s := range []string{b.bastion.Addr(), "no " + tc.what + " algorithm", tc.offered, tc.setting} {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q lacks %q", msg, s)
				}
			}
		})
	}
}

// defaultClientHandshake runs a key exchange with x/crypto's default
// algorithms, which still include SHA-1 ones.
func defaultClientHandshake(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	errSeen := errors.New("host key seen")
	_, _, _, err = ssh.NewClientConn(c, addr, &ssh.ClientConfig{User: "probe",
		HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return errSeen }})
	if errors.Is(err, errSeen) {
		return nil
	}
	return err
}

// TestPinnedKeyTypeNotOffered: a bastion that has the pinned key but does
// not offer it with an algorithm pgrelay accepts (an RSA key offered only
// as the SHA-1 ssh-rsa, an ECDSA key left out of HostKeyAlgorithms)
// presents another of its keys. That is refused, but explained as what it
// is, not as a changed key that someone may be intercepting.
func TestPinnedKeyTypeNotOffered(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, algos, want string
		key               func() (crypto.Signer, error)
	}{
		{"rsa as ssh-rsa only", "ssh-ed25519,ssh-rsa", "rsa-sha2-512, rsa-sha2-256",
			func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }},
		{"ecdsa not offered", "ssh-ed25519", "ecdsa-sha2-nistp256",
			func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			priv, err := tc.key()
			if err != nil {
				t.Fatal(err)
			}
			block, err := ssh.MarshalPrivateKey(priv, "second host key")
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(t.TempDir(), "ssh_host_key")
			if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
				t.Fatal(err)
			}
			pinned, err := ssh.NewPublicKey(priv.Public())
			if err != nil {
				t.Fatal(err)
			}
			b := setupOwn(t, testenv.BastionOptions{ExtraConfig: []string{"HostKey " + file, "HostKeyAlgorithms " + tc.algos}})
			cfg := b.cfg
			cfg.HostKeys = []ssh.PublicKey{pinned}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			tun, err := tunnel.Dial(ctx, cfg)
			if err == nil {
				_ = tun.Close()
				t.Fatalf("Dial accepted host key %s, pinned %s", ssh.FingerprintSHA256(tun.HostKey()), ssh.FingerprintSHA256(pinned))
			}
			t.Logf("refused: %v", err)
			var mismatch *tunnel.HostKeyMismatchError
			if !errors.As(err, &mismatch) || mismatch.Presented != ssh.FingerprintSHA256(b.bastion.HostKey) {
				t.Fatalf("Dial = %v (%T), want a *HostKeyMismatchError presenting the bastion's ed25519 key", err, err)
			}
			msg := err.Error()
			for _, s := range []string{b.bastion.Addr(), ssh.FingerprintSHA256(pinned), ssh.FingerprintSHA256(b.bastion.HostKey),
				"offers only the host key algorithms " + strings.ReplaceAll(tc.algos, ",", ", "), tc.want,
				"does not mean that its key changed", "HostKeyAlgorithms", "trust-host-key"} {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q lacks %q", msg, s)
				}
			}
			if strings.Contains(msg, "intercepting") {
				t.Errorf("message %q calls a key the bastion does not offer a change", msg)
			}
		})
	}
}
