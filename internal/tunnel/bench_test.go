package tunnel_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// BenchmarkQueryRoundTrip measures one "SELECT 1" round trip directly, through
// a Tunnel, and through OpenSSH's `ssh -L` to the same bastion.
func BenchmarkQueryRoundTrip(b *testing.B) {
	pg := testenv.StartPostgres(b, testenv.PostgresOptions{})
	bastion := testenv.StartBastion(b, testenv.BastionOptions{})
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		b.Fatal(err)
	}
	bastion.Authorize(b, authorizedLine(signer))

	run := func(b *testing.B, cfg *pgx.ConnConfig) {
		ctx := context.Background()
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			b.Fatalf("connect: %v", err)
		}
		defer conn.Close(ctx)
		var one int
		b.ResetTimer()
		for b.Loop() {
			if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				b.Fatal(err)
			}
		}
	}
	pgConfig := func(b *testing.B) *pgx.ConnConfig {
		cfg, err := pgx.ParseConfig(pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
		if err != nil {
			b.Fatal(err)
		}
		return cfg
	}

	b.Run("direct", func(b *testing.B) { run(b, pgConfig(b)) })
	b.Run("tunnel", func(b *testing.B) {
		tun := dial(b, tunnel.Config{Addr: bastion.Addr(), User: bastion.User, Signer: signer, HostKeys: []ssh.PublicKey{bastion.HostKey}})
		cfg := pgConfig(b)
		cfg.DialFunc = tun.DialContext
		cfg.LookupFunc = func(_ context.Context, host string) ([]string, error) { return []string{host}, nil }
		run(b, cfg)
	})
	b.Run("ssh-L", func(b *testing.B) {
		port := openSSHForward(b, bastion, priv, pg.Addr())
		cfg := pgConfig(b)
		cfg.Port = uint16(port)
		run(b, cfg)
	})
}

// BenchmarkThroughput copies 1 MiB per iteration to an echo server behind
// the bastion and back.
func BenchmarkThroughput(b *testing.B) {
	echo := startEcho(b)
	bd := setup(b, testenv.BastionOptions{})
	tun := dial(b, bd.cfg)
	c, err := tun.DialContext(context.Background(), "tcp", echo)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 1<<20)
	back := make([]byte, len(payload))
	b.SetBytes(int64(2 * len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		errc := make(chan error, 1)
		go func() {
			_, err := c.Write(payload)
			errc <- err
		}()
		if _, err := io.ReadFull(c, back); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
}

// openSSHForward starts `ssh -N -L` to target through the bastion and
// returns the local port once it accepts connections.
func openSSHForward(b *testing.B, bastion *testenv.Bastion, priv ed25519.PrivateKey, target string) int {
	b.Helper()
	sshBin, err := exec.LookPath("ssh")
	if err != nil {
		b.Skip("no ssh client on PATH")
	}
	dir := b.TempDir()
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		b.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		b.Fatal(err)
	}
	knownHosts := filepath.Join(dir, "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(bastion.Addr())}, bastion.HostKey) + "\n"
	if err := os.WriteFile(knownHosts, []byte(line), 0o600); err != nil {
		b.Fatal(err)
	}
	port := freeLocalPort(b)
	cmd := exec.Command(sshBin, "-N", "-F", "/dev/null",
		"-i", keyFile, "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile="+knownHosts, "-o", "StrictHostKeyChecking=yes",
		"-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes",
		"-p", strconv.Itoa(bastion.Port),
		"-L", "127.0.0.1:"+strconv.Itoa(port)+":"+target,
		bastion.User+"@"+bastion.Host)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			return port
		}
		if time.Now().After(deadline) {
			b.Fatalf("ssh -L not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeLocalPort(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
