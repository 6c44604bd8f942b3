package bench_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// Cipher names as SSH negotiates them.
const (
	cipherChaCha = "chacha20-poly1305@openssh.com"
	cipherAESGCM = "aes128-gcm@openssh.com"
)

// cipherPaths are the extra paths of the cipher comparison: OpenSSH's
// ssh forced to AES-128-GCM, and pgrelay's tunnel to a bastion that
// offers only ChaCha20-Poly1305 (pgrelay offers AES-128-GCM first).
type cipherPaths struct {
	aesForward *sshForward
	chachaTun  *tunnel.Tunnel
	// negotiated ciphers, checked when the paths are made
	aesSSH, chachaPgrelay string
}

func (e *env) cipherEnv(b *testing.B) *cipherPaths {
	e.prepare(b, "cipher paths", func(tb *processTB) {
		ctx := context.Background()
		c := &cipherPaths{}
		fwd, first, err := e.startSSHForward(ctx, tb, 0, []string{"-c", cipherAESGCM})
		if err != nil {
			tb.Fatalf("%v", err)
		}
		_ = first.Close()
		c.aesForward = fwd
		e.addForward(fwd)
		tb.Cleanup(fwd.stop)

		opts := bastionOptions
		opts.ExtraConfig = append(opts.ExtraConfig, "Ciphers "+cipherChaCha)
		other := testenv.StartBastion(tb, opts)
		other.Authorize(tb, e.authorizedKey)
		cfg := e.tunnelCfg
		cfg.Addr = other.Addr()
		cfg.HostKeys = append(cfg.HostKeys[:0:0], other.HostKey)
		var negotiated tunnel.Negotiated
		cfg.OnNegotiated = func(n tunnel.Negotiated) { negotiated = n }
		if c.chachaTun, err = tunnel.Dial(ctx, cfg); err != nil {
			tb.Fatalf("tunnel to the ChaCha20-only bastion: %v", err)
		}
		tb.Cleanup(func() { _ = c.chachaTun.Close() })
		if negotiated.Cipher != cipherChaCha {
			tb.Fatalf("pgrelay negotiated %q with the ChaCha20-only bastion", negotiated.Cipher)
		}
		e.cipher = c
	})
	return e.cipher
}

// BenchmarkCipher compares the two AEAD ciphers both implementations
// offer, on the COPY of the throughput benchmark (PGRELAY_BENCH_CIPHER_MB,
// default 500 MB, per operation): OpenSSH's ssh -L with its default
// ChaCha20-Poly1305 and forced to AES-128-GCM, pgrelay's in-process tunnel
// with its default AES-128-GCM and against a bastion that offers only
// ChaCha20-Poly1305. MB/s and CPU per GB; the bastion's sshd decrypts and
// encrypts with the same cipher, so its CPU shows the cipher's cost too.
func BenchmarkCipher(b *testing.B) {
	e := sharedEnv(b)
	c := e.cipherEnv(b)
	rows := int64(envInt(b, "PGRELAY_BENCH_CIPHER_MB", 500)) * 1e6 / 1001
	sql := fmt.Sprintf("COPY (SELECT repeat('x', 1000) FROM generate_series(1, %d)) TO STDOUT", rows)
	paths := []path{
		{"openssh_chacha20", func() *pgx.ConnConfig { return e.viaAddr(e.forward.addr) }, e.forward.addr},
		{"openssh_aes128gcm", func() *pgx.ConnConfig { return e.viaAddr(c.aesForward.addr) }, c.aesForward.addr},
		{"pgrelay_aes128gcm", func() *pgx.ConnConfig { return e.viaTunnel(e.tun) }, ""},
		{"pgrelay_chacha20", func() *pgx.ConnConfig { return e.viaTunnel(c.chachaTun) }, ""},
	}
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			conn := connect(b, p.config())
			b.SetBytes(rows * 1001)
			cpu := e.sampleCPU()
			n := 0
			for b.Loop() {
				tag, err := conn.PgConn().CopyTo(context.Background(), io.Discard, sql)
				if err != nil || tag.RowsAffected() != rows {
					b.Fatalf("COPY over %s: %v (%d rows)", p.name, err, tag.RowsAffected())
				}
				n++
			}
			reportCPUPer(b, cpu, e.sampleCPU(), float64(rows*1001)*float64(n)/1e9, "GB")
		})
	}
}
