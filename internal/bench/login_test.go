package bench_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// loginVariant is one way of logging in to the bastion: a key exchange
// and a client key type.
type loginVariant struct {
	name, kex, key string
}

// loginVariants are the key exchanges and key types whose cost to the
// bastion BenchmarkBastionLogin compares: pgrelay's choices (X25519, its
// ed25519 or RSA keys) against NIST P-256 for either.
var loginVariants = []loginVariant{
	{"x25519_ed25519", ssh.KeyExchangeCurve25519, "ed25519"},
	{"x25519_rsa3072", ssh.KeyExchangeCurve25519, "rsa3072"},
	{"x25519_ecdsa256", ssh.KeyExchangeCurve25519, "ecdsa256"},
	{"p256_ed25519", ssh.KeyExchangeECDHP256, "ed25519"},
	{"p256_ecdsa256", ssh.KeyExchangeECDHP256, "ecdsa256"},
}

// loginKeys holds the client keys of the login variants, made and
// authorized at the bastion once per process.
var loginKeys struct {
	once    sync.Once
	signers map[string]ssh.Signer
	err     error
}

// loginSigners returns the variants' client keys, authorized at e's
// bastion (the ed25519 one is the benchmarks' own key).
func (e *env) loginSigners(b *testing.B) map[string]ssh.Signer {
	loginKeys.once.Do(func() {
		m := map[string]ssh.Signer{"ed25519": e.tunnelCfg.Signer}
		ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			loginKeys.err = err
			return
		}
		rk, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			loginKeys.err = err
			return
		}
		for name, k := range map[string]any{"ecdsa256": ec, "rsa3072": rk} {
			s, err := ssh.NewSignerFromKey(k)
			if err != nil {
				loginKeys.err = err
				return
			}
			if name == "rsa3072" {
				// SHA-2 signatures, as pgrelay's RSA keys make.
				if s, err = ssh.NewSignerWithAlgorithms(s.(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSASHA512}); err != nil {
					loginKeys.err = err
					return
				}
			}
			m[name] = s
			e.bastion.Authorize(b, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))))
		}
		loginKeys.signers = m
	})
	if loginKeys.err != nil {
		b.Fatalf("login keys: %v", loginKeys.err)
	}
	return loginKeys.signers
}

// BenchmarkBastionLogin measures what one login costs the bastion's sshd,
// which forks for each connection and does the key exchange and the key
// check: a TCP connection, the SSH handshake, public key authentication
// and one channel to PostgreSQL, then closing. "pgrelay" is
// tunnel.Dial with pgrelay's own algorithm lists; the variants log in
// with x/crypto directly, pgrelay's ciphers and one key exchange and key
// type each. It is what the runs benchmark's bastion spends per run when
// every run opens its tunnel.
func BenchmarkBastionLogin(b *testing.B) {
	e := sharedEnv(b)
	ctx := context.Background()
	dbAddr := net.JoinHostPort(e.pg.Host, strconv.Itoa(e.pg.Port))
	login := func(b *testing.B, dial func() (func(), error)) {
		keep := bastionChildren()
		cpu := e.sampleCPU()
		for b.Loop() {
			closeIt, err := dial()
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			closeIt()
			b.StartTimer()
		}
		waitBastionIdle(b, keep)
		reportCPU(b, cpu, e.sampleCPU(), float64(b.N))
		reportPerOp(b, 1e6, "ms/op")
	}
	b.Run("pgrelay", func(b *testing.B) {
		login(b, func() (func(), error) {
			t, err := tunnel.Dial(ctx, e.tunnelCfg)
			if err != nil {
				return nil, err
			}
			c, err := t.DialContext(ctx, "tcp", dbAddr)
			if err != nil {
				_ = t.Close()
				return nil, err
			}
			return func() { _ = c.Close(); _ = t.Close() }, nil
		})
	})
	for _, v := range loginVariants {
		b.Run(v.name, func(b *testing.B) {
			signer := e.loginSigners(b)[v.key]
			cfg := &ssh.ClientConfig{
				Config: ssh.Config{KeyExchanges: []string{v.kex},
					Ciphers: []string{ssh.CipherAES128GCM, ssh.CipherChaCha20Poly1305}},
				User:              e.bastion.User,
				Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
				HostKeyCallback:   ssh.FixedHostKey(e.bastion.HostKey),
				HostKeyAlgorithms: []string{e.bastion.HostKey.Type()},
				Timeout:           30 * time.Second,
			}
			login(b, func() (func(), error) {
				cl, err := ssh.Dial("tcp", e.bastion.Addr(), cfg)
				if err != nil {
					return nil, err
				}
				c, err := cl.Dial("tcp", dbAddr)
				if err != nil {
					_ = cl.Close()
					return nil, err
				}
				return func() { _ = c.Close(); _ = cl.Close() }, nil
			})
		})
	}
}

// bastionChildren returns the PIDs of the processes the bastions' listening
// sshd have forked and not yet reaped: one per open SSH connection.
func bastionChildren() map[int]bool {
	procs := readAllStats()
	listeners := map[int]bool{}
	for _, p := range procs {
		if p.ppid == os.Getpid() && p.comm == "sshd" {
			listeners[p.pid] = true
		}
	}
	out := map[int]bool{}
	for _, p := range procs {
		if listeners[p.ppid] {
			out[p.pid] = true
		}
	}
	return out
}

// waitBastionIdle waits until the bastions' sshd have no connection left
// but those in keep (the long-lived tunnels of the other benchmarks), so
// that what the connections since cost them has been reaped and is
// counted by sampleCPU.
func waitBastionIdle(b *testing.B, keep map[int]bool) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		extra := 0
		for pid := range bastionChildren() {
			if !keep[pid] {
				extra++
			}
		}
		if extra == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the bastion's sshd still had %d connections 10 s after the last login closed", extra)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
