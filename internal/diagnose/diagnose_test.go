package diagnose_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// env is the set of real servers the tests share.
type env struct {
	pg      *testenv.Postgres // no TLS; pg_hba rejects role hba_blocked
	tls     *testenv.Postgres // SSL only, like AlloyDB and Lakebase
	full    *testenv.Postgres // max_connections 6: three slots for non-superusers
	bastion *testenv.Bastion  // forwards anywhere
	// signer is authorized on bastion; line is its authorized_keys line.
	signer ssh.Signer
	line   string
}

func startEnv(t *testing.T) *env {
	t.Helper()
	var e env
	// Clusters of the test's own: the roles and databases have fixed names
	// (dbt, analytics, hba_blocked, private) that the reports and their
	// checks name, pg_hba rejects hba_blocked, and full has its slots
	// filled.
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		e.tls = testenv.StartPostgres(t, testenv.PostgresOptions{SSLOnly: true})
	}()
	go func() {
		defer wg.Done()
		e.full = testenv.StartPostgres(t, testenv.PostgresOptions{MaxConnections: 6})
	}()
	go func() {
		defer wg.Done()
		e.bastion = testenv.SharedBastion(t, testenv.BastionOptions{})
	}()
	e.pg = testenv.StartPostgres(t, testenv.PostgresOptions{HBA: []string{
		"host all hba_blocked 127.0.0.1/32 reject",
		"host all hba_blocked ::1/128 reject",
	}})
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, p := range []*testenv.Postgres{e.pg, e.tls, e.full} {
		p.CreateRole(t, "dbt", "dbt-pw")
		p.CreateDatabase(t, "analytics", "dbt")
	}
	e.pg.CreateRole(t, "hba_blocked", "pw")
	e.pg.CreateRole(t, "cannot_login", "pw")
	e.pg.Exec(t, "ALTER ROLE cannot_login NOLOGIN")
	e.pg.CreateDatabase(t, "private", "postgres")
	e.pg.Exec(t, "REVOKE CONNECT ON DATABASE private FROM PUBLIC")
	e.pg.CreateDatabase(t, "alloy", "dbt")
	e.pg.Exec(t, "ALTER DATABASE alloy SET alloydb.iam_authentication = 'off'")
	e.signer, e.line = newKey(t)
	e.bastion.Authorize(t, e.line)
	return &e
}

func newKey(t *testing.T) (ssh.Signer, string) {
	t.Helper()
	pair, err := sshkey.Generate(sshkey.Ed25519, "test")
	if err != nil {
		t.Fatal(err)
	}
	s, err := sshkey.Signer(pair.PrivatePEM)
	if err != nil {
		t.Fatal(err)
	}
	return s, sshkey.AuthorizedKey(pair.Public, "pgrelay:test")
}

func direct(p *testenv.Postgres, user, password, database string, mode connection.SSLMode) connection.Spec {
	return connection.Spec{Name: "wh", Host: p.Host, Port: p.Port, Database: database, User: user,
		Password: secret.New(password), SSLMode: mode}
}

func (e *env) viaBastion(s connection.Spec, host string, port int) connection.Spec {
	s.Tunnel = &connection.Tunnel{Host: host, Port: port, User: e.bastion.User}
	return s
}

func (e *env) input(s connection.Spec) diagnose.Input {
	return diagnose.Input{Spec: s, SavedName: "wh", Signer: e.signer, PublicKeyLine: e.line, PinFirstUse: true,
		StepTimeout: 3 * time.Second}
}

// run runs a test and checks the invariants every report keeps: steps in
// plan order, reported through progress as they finished, nothing after a
// failure but skipped steps.
func run(t *testing.T, in diagnose.Input) diagnose.Report {
	t.Helper()
	var seen []diagnose.Step
	rep := diagnose.Run(context.Background(), in, func(s diagnose.Step) { seen = append(seen, s) })
	spec := in.Spec
	spec.ApplyDefaults()
	plan := diagnose.Plan(&spec)
	if len(rep.Steps) != len(plan) || len(seen) != len(plan) {
		t.Fatalf("%d steps reported, %d through progress; plan has %d: %+v", len(rep.Steps), len(seen), len(plan), rep.Steps)
	}
	failed := false
	for i, s := range rep.Steps {
		if s.ID != plan[i] || seen[i].ID != s.ID || seen[i].Status != s.Status {
			t.Fatalf("step %d is %s/%s (progress %s), plan says %s", i, s.ID, s.Status, seen[i].ID, plan[i])
		}
		if failed && s.Status != diagnose.StatusSkipped {
			t.Fatalf("step %s after a failure has status %s", s.ID, s.Status)
		}
		if s.Status == diagnose.StatusFailed {
			failed = true
			if s.Error == "" || s.Hint == "" || s.Err == nil {
				t.Errorf("failed step %s lacks error or hint: %+v", s.ID, s)
			}
		}
	}
	if rep.OK == failed {
		t.Fatalf("report ok=%v but failed=%v", rep.OK, failed)
	}
	for _, s := range rep.Steps {
		t.Logf("%-13s %-7s %7.2f ms  %s %s %s", s.ID, s.Status, s.DurationMS, s.Detail, s.Error, s.Hint)
	}
	return rep
}

// failedAt asserts that the test failed at step id and returns that step.
func failedAt(t *testing.T, rep diagnose.Report, id diagnose.StepID, hintHas ...string) *diagnose.Step {
	t.Helper()
	f := rep.Failed()
	if f == nil {
		t.Fatalf("test passed; want a failure at %s", id)
	}
	if f.ID != id {
		t.Fatalf("failed at %s (%s; hint: %s); want %s", f.ID, f.Error, f.Hint, id)
	}
	for _, h := range hintHas {
		if !strings.Contains(f.Hint, h) {
			t.Errorf("hint of %s does not contain %q:\n%s", id, h, f.Hint)
		}
	}
	return f
}

// sqlstate returns the SQLSTATE inside err.
func sqlstate(err error) string {
	var pgErr interface{ SQLState() string }
	if errors.As(err, &pgErr) {
		return pgErr.SQLState()
	}
	return ""
}

// blackhole returns a loopback address whose TCP connects time out: a
// listener that never accepts, with its accept queue full, so that the
// kernel drops further SYNs.
func blackhole(t *testing.T) (string, int) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return "127.0.0.1", port // the queue is full
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Fatalf("connects to %s never time out", addr)
	return "", 0
}

// relay forwards connections to listenHost:random port to target.
func relay(t *testing.T, listenHost, target string) (string, int) {
	t.Helper()
	return listenHost, testenv.TCPRelay(t, listenHost, target)
}

// otherCA returns the PEM of a CA that signed nothing the servers use.
func otherCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "some other CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestDiagnose(t *testing.T) {
	t.Parallel()
	e := startEnv(t)

	t.Run("DirectOK", func(t *testing.T) {
		t.Parallel()
		rep := run(t, e.input(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable)))
		if !rep.OK {
			t.Fatalf("failed: %+v", rep.Failed())
		}
		if s := rep.Step(diagnose.StepTLS); s.Status != diagnose.StatusSkipped || !strings.Contains(s.Detail, "not requested") {
			t.Errorf("tls step with sslmode=disable: %+v", s)
		}
		srv := rep.Server
		if srv == nil || srv.CurrentUser != "dbt" || srv.Database != "analytics" || srv.VersionNum < 100000 ||
			srv.ReadOnlyReplica || srv.Encrypted || srv.Flavor != "" {
			t.Fatalf("server info = %+v", srv)
		}
		if q := rep.Step(diagnose.StepQuery); !strings.Contains(q.Detail, srv.Version) || !strings.Contains(q.Detail, `"dbt"`) || q.Hint != "" {
			t.Errorf("query detail = %q, hint %q", q.Detail, q.Hint)
		}
		if a := rep.Step(diagnose.StepPostgresAuth); !strings.Contains(a.Detail, "SCRAM-SHA-256") {
			t.Errorf("postgres_auth detail = %q", a.Detail)
		}
		// The JSON form uses the documented snake_case names.
		b, _ := json.Marshal(rep.Steps[0])
		for _, k := range []string{`"id":"resolve"`, `"status":"ok"`, `"duration_ms":`, `"detail":`} {
			if !strings.Contains(string(b), k) {
				t.Errorf("step JSON %s lacks %s", b, k)
			}
		}
	})

	t.Run("DirectVerifyFull", func(t *testing.T) {
		t.Parallel()
		s := direct(e.tls, "dbt", "dbt-pw", "analytics", connection.SSLVerifyFull)
		s.SSLRootCert = string(e.tls.CAPEM)
		rep := run(t, e.input(s))
		if !rep.OK || !rep.Server.Encrypted {
			t.Fatalf("failed: %+v", rep.Failed())
		}
		if d := rep.Step(diagnose.StepTLS).Detail; !strings.Contains(d, "verify-full") || !strings.Contains(d, "TLS 1.3") {
			t.Errorf("tls detail = %q", d)
		}
	})

	t.Run("BastionOK", func(t *testing.T) {
		t.Parallel()
		s := e.viaBastion(direct(e.tls, "dbt", "dbt-pw", "analytics", connection.SSLRequire), e.bastion.Host, e.bastion.Port)
		rep := run(t, e.input(s))
		if !rep.OK {
			t.Fatalf("failed: %+v", rep.Failed())
		}
		want := sshkey.Fingerprint(e.bastion.HostKey)
		if hk := rep.HostKey; hk == nil || hk.State != diagnose.HostKeyFirstUse || hk.Fingerprint != want ||
			sshkey.Fingerprint(hk.Key) != want {
			t.Fatalf("host key = %+v, want first use of %s", rep.HostKey, want)
		}
		if d := rep.Step(diagnose.StepSSHHandshake).Detail; !strings.Contains(d, want) || !strings.Contains(d, "pinned") {
			t.Errorf("handshake detail = %q", d)
		}
		// The handshake and authentication are timed apart (the tunnel's
		// HostKeyAccepted hook splits them).
		for _, id := range []diagnose.StepID{diagnose.StepBastionTCP, diagnose.StepSSHHandshake, diagnose.StepSSHAuth} {
			if rep.Step(id).DurationMS <= 0 {
				t.Errorf("step %s took %v ms", id, rep.Step(id).DurationMS)
			}
		}
		if rep.Server.CurrentUser != "dbt" || !rep.Server.Encrypted {
			t.Errorf("server = %+v", rep.Server)
		}
		// Pinned: the key matches.
		in := e.input(s)
		in.HostKeys = []ssh.PublicKey{e.bastion.HostKey}
		rep = run(t, in)
		if !rep.OK || rep.HostKey.State != diagnose.HostKeyPinned {
			t.Fatalf("with the pin: ok=%v host key %+v", rep.OK, rep.HostKey)
		}
	})

	t.Run("BastionTCPTimeout", func(t *testing.T) {
		t.Parallel()
		host, port := blackhole(t)
		in := e.input(e.viaBastion(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable), host, port))
		in.StepTimeout = 500 * time.Millisecond
		start := time.Now()
		rep := run(t, in)
		f := failedAt(t, rep, diagnose.StepBastionTCP, "security group", "allowlist", "VPN")
		var de *tunnel.DialError
		if !errors.As(f.Err, &de) {
			t.Errorf("error %T is not a *tunnel.DialError", f.Err)
		}
		if time.Since(start) > 3*time.Second {
			t.Errorf("took %v with a 500ms step timeout", time.Since(start))
		}
	})

	t.Run("BastionRefused", func(t *testing.T) {
		t.Parallel()
		in := e.input(e.viaBastion(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable), "127.0.0.1", testenv.FreePort(t)))
		f := failedAt(t, run(t, in), diagnose.StepBastionTCP, "no SSH server listens", "sshd")
		if !errors.Is(f.Err, syscall.ECONNREFUSED) {
			t.Errorf("error %v is not ECONNREFUSED", f.Err)
		}
	})

	t.Run("HandshakeTimeout", func(t *testing.T) {
		t.Parallel()
		fp := testenv.StartFaultProxy(t, e.bastion.Addr())
		fp.Freeze() // accepts TCP, never answers
		in := e.input(e.viaBastion(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable), fp.Host(), fp.Port()))
		in.StepTimeout = 500 * time.Millisecond
		f := failedAt(t, run(t, in), diagnose.StepSSHHandshake, "no SSH server answered", "load balancer")
		var te *diagnose.StepTimeoutError
		if !errors.As(f.Err, &te) {
			t.Errorf("error %T is not a time-out", f.Err)
		}
	})

	t.Run("KeyNotAuthorized", func(t *testing.T) {
		t.Parallel()
		in := e.input(e.viaBastion(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable), e.bastion.Host, e.bastion.Port))
		in.Signer, in.PublicKeyLine = newKey(t)
		// The hint gives the line restricted to forwarding to the database.
		restricted := fmt.Sprintf(`restrict,port-forwarding,permitopen="%s:%d" %s`, e.pg.Host, e.pg.Port, in.PublicKeyLine)
		f := failedAt(t, run(t, in), diagnose.StepSSHAuth, restricted, "authorized_keys",
			"pgrelay connection bastion-setup wh")
		var ae *tunnel.AuthError
		if !errors.As(f.Err, &ae) {
			t.Errorf("error %T is not a *tunnel.AuthError", f.Err)
		}
	})

	// Hop 2 of a chain refuses its key: the hint names hop 2's setup
	// script, not the default one of hop 1 (whose line would let the key
	// forward only to hop 2, and would replace hop 2's own line there).
	t.Run("KeyNotAuthorizedOnHop2", func(t *testing.T) {
		t.Parallel()
		s := e.viaBastion(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable), e.bastion.Host, e.bastion.Port)
		s.Tunnel.Next = []connection.Hop{{Host: e.bastion.Host, Port: e.bastion.Port, User: e.bastion.User}}
		in := e.input(s)
		other, otherLine := newKey(t)
		in.Hops = []diagnose.HopInput{{Signer: e.signer, PublicKeyLine: e.line}, {Signer: other, PublicKeyLine: otherLine}}
		f := failedAt(t, run(t, in), diagnose.StepSSHAuth, "authorized_keys", "pgrelay connection bastion-setup wh --hop 2`")
		if f.Hop != 2 {
			t.Fatalf("failed at hop %d, want hop 2", f.Hop)
		}
	})

	t.Run("DraftWithoutKey", func(t *testing.T) {
		t.Parallel()
		in := e.input(e.viaBastion(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable), e.bastion.Host, e.bastion.Port))
		in.Signer, in.PublicKeyLine, in.SavedName, in.PinFirstUse = nil, "", "", false
		rep := run(t, in)
		f := failedAt(t, rep, diagnose.StepSSHAuth, "Save the connection")
		if !errors.Is(f.Err, diagnose.ErrNoKeyPair) {
			t.Errorf("error = %v", f.Err)
		}
		if d := rep.Step(diagnose.StepSSHHandshake).Detail; !strings.Contains(d, "not pinned") {
			t.Errorf("a draft's handshake detail claims a pin: %q", d)
		}
	})

	t.Run("HostKeyChanged", func(t *testing.T) {
		t.Parallel()
		b := testenv.StartBastion(t, testenv.BastionOptions{})
		b.Authorize(t, e.line)
		old := b.HostKey
		b.RotateHostKey(t)
		in := e.input(e.viaBastion(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable), b.Host, b.Port))
		in.HostKeys = []ssh.PublicKey{old}
		rep := run(t, in)
		newFP := sshkey.Fingerprint(b.HostKey)
		f := failedAt(t, rep, diagnose.StepSSHHandshake, sshkey.Fingerprint(old), newFP, "host key changed",
			"pgrelay connection trust-host-key wh --fingerprint "+newFP)
		var mm *tunnel.HostKeyMismatchError
		if !errors.As(f.Err, &mm) {
			t.Errorf("error %T is not a *tunnel.HostKeyMismatchError", f.Err)
		}
		if hk := rep.HostKey; hk == nil || hk.State != diagnose.HostKeyChanged || sshkey.Fingerprint(hk.Key) != newFP {
			t.Fatalf("host key = %+v", rep.HostKey)
		}

		// The same mismatch with a key given up front that never logged
		// in: nothing changed, the key given is wrong.
		in.Hops = []diagnose.HopInput{{Signer: e.signer, PublicKeyLine: e.line, HostKeys: []ssh.PublicKey{old},
			HostKeysUnverified: true}}
		f = failedAt(t, run(t, in), diagnose.StepSSHHandshake,
			"presented host key "+newFP+", which does not match the key given with the connection ("+sshkey.Fingerprint(old)+")",
			"ssh-keyscan -p "+strconv.Itoa(b.Port)+" "+b.Host+" | ssh-keygen -lf -",
			`pgrelay connection update wh --ssh-known-host "ssh-ed25519 AAAA..."`,
			"pgrelay connection trust-host-key wh --fingerprint "+newFP)
		if strings.Contains(f.Hint, "changed") || strings.Contains(f.Hint, "rebuilt") {
			t.Errorf("a key given wrong is called changed: %s", f.Hint)
		}
	})

	t.Run("ForwardProhibited", func(t *testing.T) {
		t.Parallel()
		for name, opts := range map[string]testenv.BastionOptions{
			"PermitOpen":        {PermitOpen: []string{"127.0.0.1:1"}},
			"DisableForwarding": {DisableForwarding: true},
		} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				b := testenv.StartBastion(t, opts)
				b.Authorize(t, e.line)
				in := e.input(e.viaBastion(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable), b.Host, b.Port))
				f := failedAt(t, run(t, in), diagnose.StepForward, "AllowTcpForwarding", "PermitOpen", "permitopen",
					"pgrelay connection public-key wh --restricted")
				var fe *tunnel.ForwardError
				if !errors.As(f.Err, &fe) || fe.Reason != ssh.Prohibited {
					t.Errorf("error %v is not a prohibited forward", f.Err)
				}
			})
		}
	})

	t.Run("ForwardConnectFailed", func(t *testing.T) {
		t.Parallel()
		s := direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable)
		s.Port = testenv.FreePort(t) // nothing listens there
		in := e.input(e.viaBastion(s, e.bastion.Host, e.bastion.Port))
		f := failedAt(t, run(t, in), diagnose.StepForward, "could not connect", "security group", "database's network")
		var fe *tunnel.ForwardError
		if !errors.As(f.Err, &fe) || fe.Reason != ssh.ConnectionFailed {
			t.Errorf("error %v is not a failed forward", f.Err)
		}
	})

	t.Run("ForwardTimeout", func(t *testing.T) {
		t.Parallel()
		host, port := blackhole(t)
		s := direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable)
		s.Host, s.Port = host, port
		in := e.input(e.viaBastion(s, e.bastion.Host, e.bastion.Port))
		in.StepTimeout = 500 * time.Millisecond
		f := failedAt(t, run(t, in), diagnose.StepForward, "drops packets from the bastion", "security group")
		var te *diagnose.StepTimeoutError
		if !errors.As(f.Err, &te) || te.Step != diagnose.StepForward {
			t.Errorf("error %v is not the forward's time-out", f.Err)
		}
	})

	t.Run("TunnelDrops", func(t *testing.T) {
		t.Parallel()
		fp := testenv.StartFaultProxy(t, e.bastion.Addr())
		s := e.viaBastion(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable), fp.Host(), fp.Port())
		s.Tunnel.KeepaliveInterval, s.Tunnel.KeepaliveCountMax = connection.Duration(100*time.Millisecond), 2
		in := e.input(s)
		// The path goes silent right after authentication, like an idle
		// timeout of a load balancer.
		rep := diagnose.Run(context.Background(), in, func(st diagnose.Step) {
			if st.ID == diagnose.StepSSHAuth {
				fp.Freeze()
			}
		})
		defer fp.Thaw()
		f := failedAt(t, rep, diagnose.StepForward, "ClientAliveInterval 30", "ClientAliveCountMax 10", "load balancer")
		var de *tunnel.DroppedError
		if !errors.As(f.Err, &de) {
			t.Errorf("error %T is not a *tunnel.DroppedError", f.Err)
		}
	})

	t.Run("SSLRequiredButDisabled", func(t *testing.T) {
		t.Parallel()
		for _, via := range []string{"direct", "bastion"} {
			s := direct(e.tls, "dbt", "dbt-pw", "analytics", connection.SSLDisable)
			if via == "bastion" {
				s = e.viaBastion(s, e.bastion.Host, e.bastion.Port)
			}
			f := failedAt(t, run(t, e.input(s)), diagnose.StepPostgresAuth, "requires SSL",
				"pgrelay connection update wh --sslmode require")
			if sqlstate(f.Err) != "28000" {
				t.Errorf("%s: SQLSTATE %q, want 28000", via, sqlstate(f.Err))
			}
		}
	})

	t.Run("PgHbaRejects", func(t *testing.T) {
		t.Parallel()
		f := failedAt(t, run(t, e.input(direct(e.pg, "hba_blocked", "pw", "analytics", connection.SSLDisable))),
			diagnose.StepPostgresAuth, "pg_hba.conf", "127.0.0.1", "hba_blocked")
		if sqlstate(f.Err) != "28000" || strings.Contains(f.Hint, "requires SSL") {
			t.Errorf("SQLSTATE %q, hint %q", sqlstate(f.Err), f.Hint)
		}
		s := e.viaBastion(direct(e.pg, "hba_blocked", "pw", "analytics", connection.SSLDisable), e.bastion.Host, e.bastion.Port)
		failedAt(t, run(t, e.input(s)), diagnose.StepPostgresAuth, "pg_hba.conf", "the bastion's address")
	})

	t.Run("RoleCannotLogIn", func(t *testing.T) {
		t.Parallel()
		f := failedAt(t, run(t, e.input(direct(e.pg, "cannot_login", "pw", "analytics", connection.SSLDisable))),
			diagnose.StepDatabase, "NOLOGIN", `ALTER ROLE "cannot_login" LOGIN`)
		if sqlstate(f.Err) != "28000" {
			t.Errorf("SQLSTATE %q", sqlstate(f.Err))
		}
	})

	t.Run("NoConnectPrivilege", func(t *testing.T) {
		t.Parallel()
		f := failedAt(t, run(t, e.input(direct(e.pg, "dbt", "dbt-pw", "private", connection.SSLDisable))),
			diagnose.StepDatabase, `GRANT CONNECT ON DATABASE "private" TO "dbt"`, "pgrelay grants wh")
		if sqlstate(f.Err) != "42501" {
			t.Errorf("SQLSTATE %q", sqlstate(f.Err))
		}
	})

	t.Run("WrongCA", func(t *testing.T) {
		t.Parallel()
		for _, mode := range []connection.SSLMode{connection.SSLVerifyFull, connection.SSLVerifyCA} {
			s := direct(e.tls, "dbt", "dbt-pw", "analytics", mode)
			s.SSLRootCert = otherCA(t)
			f := failedAt(t, run(t, e.input(s)), diagnose.StepTLS, "not signed by", "pgrelay testenv CA", "--ssl-root-cert",
				"`DB_PASSWORD=... pgrelay connection update wh --ssl-root-cert CA.pem --password-env DB_PASSWORD`",
				"`DB_PASSWORD=... pgrelay connection update wh --sslmode require --password-env DB_PASSWORD`")
			var ua x509.UnknownAuthorityError
			if !errors.As(f.Err, &ua) {
				t.Errorf("%s: error %T is not an x509.UnknownAuthorityError", mode, f.Err)
			}
		}
	})

	t.Run("HostnameMismatch", func(t *testing.T) {
		t.Parallel()
		// 127.0.0.2 is loopback but not on the server's certificate.
		host, port := relay(t, "127.0.0.2", e.tls.Addr())
		s := direct(e.tls, "dbt", "dbt-pw", "analytics", connection.SSLVerifyFull)
		s.Host, s.Port, s.SSLRootCert = host, port, string(e.tls.CAPEM)
		f := failedAt(t, run(t, e.input(s)), diagnose.StepTLS, "localhost, 127.0.0.1", `not for "127.0.0.2"`,
			"`DB_PASSWORD=... pgrelay connection update wh --sslmode verify-ca --password-env DB_PASSWORD`")
		var he x509.HostnameError
		if !errors.As(f.Err, &he) {
			t.Errorf("error %T is not an x509.HostnameError", f.Err)
		}
		// The hint's fix works.
		s.SSLMode = connection.SSLVerifyCA
		if rep := run(t, e.input(s)); !rep.OK {
			t.Fatalf("verify-ca: %+v", rep.Failed())
		}
	})

	t.Run("ServerWithoutSSL", func(t *testing.T) {
		t.Parallel()
		// A lower sslmode is refused without the password again: the
		// hint's command gives it.
		f := failedAt(t, run(t, e.input(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLRequire))),
			diagnose.StepTLS, "does not accept SSL", "sslmode=prefer",
			"`DB_PASSWORD=... pgrelay connection update wh --sslmode prefer --password-env DB_PASSWORD`")
		var re *diagnose.SSLRefusedError
		if !errors.As(f.Err, &re) {
			t.Errorf("error %T is not a *diagnose.SSLRefusedError", f.Err)
		}
		// Without a stored password there is nothing to give again.
		f = failedAt(t, run(t, e.input(direct(e.pg, "dbt", "", "analytics", connection.SSLRequire))),
			diagnose.StepTLS, "`pgrelay connection update wh --sslmode prefer`")
		if strings.Contains(f.Hint, "--password-env") {
			t.Errorf("hint asks for a password the connection does not have: %s", f.Hint)
		}
		// prefer goes on unencrypted, and says so.
		rep := run(t, e.input(direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLPrefer)))
		if !rep.OK || rep.Server.Encrypted || !strings.Contains(rep.Step(diagnose.StepTLS).Detail, "unencrypted") {
			t.Fatalf("prefer without server SSL: %+v", rep.Steps)
		}
		// allow against an SSL-only server retries with TLS, as pgx does.
		rep = run(t, e.input(direct(e.tls, "dbt", "dbt-pw", "analytics", connection.SSLAllow)))
		if !rep.OK || !rep.Server.Encrypted {
			t.Fatalf("allow against SSL-only: %+v", rep.Steps)
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		t.Parallel()
		f := failedAt(t, run(t, e.input(direct(e.tls, "dbt", "nope", "analytics", connection.SSLRequire))),
			diagnose.StepPostgresAuth, "rejected the password", "pgrelay connection update wh --password-env")
		if sqlstate(f.Err) != "28P01" {
			t.Errorf("SQLSTATE %q", sqlstate(f.Err))
		}
	})

	t.Run("MissingDatabase", func(t *testing.T) {
		t.Parallel()
		rep := run(t, e.input(direct(e.tls, "dbt", "dbt-pw", "analytic", connection.SSLRequire)))
		f := failedAt(t, rep, diagnose.StepDatabase, `"analytic" does not exist`, "analytics, postgres")
		if sqlstate(f.Err) != "3D000" {
			t.Errorf("SQLSTATE %q", sqlstate(f.Err))
		}
		if rep.Step(diagnose.StepPostgresAuth).Status != diagnose.StatusOK {
			t.Error("the password was accepted, but postgres_auth did not pass")
		}
	})

	t.Run("TooManyConnections", func(t *testing.T) {
		t.Parallel()
		// Three slots are left for non-superusers: take them all.
		ctx := context.Background()
		for range 3 {
			c, err := pgx.Connect(ctx, e.full.ConnString("dbt", "dbt-pw", "analytics"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close(ctx) })
		}
		f := failedAt(t, run(t, e.input(direct(e.full, "dbt", "dbt-pw", "analytics", connection.SSLDisable))),
			diagnose.StepDatabase, "max_connections", "threads (now 4)", "PgBouncer")
		if sqlstate(f.Err) != "53300" {
			t.Errorf("SQLSTATE %q", sqlstate(f.Err))
		}
	})

	t.Run("ResolveFails", func(t *testing.T) {
		t.Parallel()
		s := direct(e.pg, "dbt", "dbt-pw", "analytics", connection.SSLDisable)
		s.Host = "no-such-host.invalid"
		in := e.input(s)
		in.StepTimeout = 2 * time.Second
		f := failedAt(t, run(t, in), diagnose.StepResolve, "no-such-host.invalid")
		var dnsErr *net.DNSError
		if !errors.As(f.Err, &dnsErr) {
			t.Errorf("error %T is not a *net.DNSError", f.Err)
		}
	})

	t.Run("FlavorSeemsWrong", func(t *testing.T) {
		t.Parallel()
		rep := run(t, e.input(direct(e.pg, "dbt", "dbt-pw", "alloy", connection.SSLDisable)))
		if !rep.OK || rep.Server.Flavor != connection.AlloyDB {
			t.Fatalf("ok=%v server=%+v", rep.OK, rep.Server)
		}
		if h := rep.Step(diagnose.StepQuery).Hint; !strings.Contains(h, "seems to be AlloyDB") {
			t.Errorf("query hint = %q", h)
		}
		s := direct(e.pg, "dbt", "dbt-pw", "alloy", connection.SSLDisable)
		s.Flavor = connection.AlloyDB
		if rep := run(t, e.input(s)); rep.Step(diagnose.StepQuery).Hint != "" {
			t.Errorf("declared AlloyDB, still hinted: %q", rep.Step(diagnose.StepQuery).Hint)
		}
	})
}

// TestNotPostgres points a connection at an SSH server's port (a bastion's
// port given as the database's): with sslmode disable and prefer (the
// default) the login gets the server's SSH banner, which no PostgreSQL
// server sends, and the hint says to check the port.
func TestNotPostgres(t *testing.T) {
	t.Parallel()
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	signer, line := newKey(t)
	e := &env{signer: signer, line: line}
	for _, mode := range []connection.SSLMode{connection.SSLDisable, connection.SSLPrefer} {
		s := connection.Spec{Name: "wh", Host: b.Host, Port: b.Port, Database: "analytics", User: "dbt",
			Password: secret.New("dbt-pw"), SSLMode: mode}
		f := failedAt(t, run(t, e.input(s)), diagnose.StepPostgresAuth, "does not speak PostgreSQL", "port (5432 is usual)")
		var np *diagnose.NotPostgresError
		if !errors.As(f.Err, &np) || np.Answer != 'S' {
			t.Errorf("%s: error %T (%v) is not a *diagnose.NotPostgresError of answer 'S'", mode, f.Err, f.Err)
		}
	}
}

// TestExpiredCA verifies a server whose certificate is still valid against
// the CA that signed it, whose certificate (the connection's
// ssl_root_cert) has expired: the hint says that the configured CA
// certificate expired, not that the server's certificate did.
func TestExpiredCA(t *testing.T) {
	t.Parallel()
	p := testenv.SharedPostgres(t, testenv.PostgresOptions{ExpiredCA: true})
	signer, line := newKey(t)
	e := &env{signer: signer, line: line}
	for _, mode := range []connection.SSLMode{connection.SSLVerifyFull, connection.SSLVerifyCA} {
		s := direct(p, "dbt", "dbt-pw", "analytics", mode)
		s.SSLRootCert = string(p.CAPEM)
		f := failedAt(t, run(t, e.input(s)), diagnose.StepTLS, `CA certificate "pgrelay testenv CA"`, "expired on",
			"ssl_root_cert", "--ssl-root-cert")
		if strings.Contains(f.Hint, "renew it on the server") {
			t.Errorf("%s: the hint blames the server's certificate: %s", mode, f.Hint)
		}
		var invalid x509.CertificateInvalidError
		if !errors.As(f.Err, &invalid) || invalid.Reason != x509.Expired {
			t.Errorf("%s: error %T is not an expired x509.CertificateInvalidError", mode, f.Err)
		}
	}
}
