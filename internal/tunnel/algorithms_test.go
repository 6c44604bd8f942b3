package tunnel_test

import (
	"context"
	"errors"
	"net"
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
