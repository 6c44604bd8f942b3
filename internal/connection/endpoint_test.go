package connection

import (
	"strings"
	"testing"
)

func TestEndpoint(t *testing.T) {
	t.Parallel()
	base := Spec{Host: "DB.internal", Port: 5432, User: "dbt", Database: "a",
		Tunnel: &Tunnel{Host: "bastion", Port: 22, User: "jump"}}
	same := base.Clone()
	same.Host, same.Database, same.Schema = " db.INTERNAL ", "b", "marts"
	if !base.Endpoint().SameAddress(same.Endpoint()) || base.Endpoint().Key() != same.Endpoint().Key() {
		t.Fatalf("database, schema and host case changed the endpoint: %s vs %s", base.Endpoint(), same.Endpoint())
	}
	if got := base.Endpoint().String(); got != "dbt@db.internal:5432 via jump@bastion:22" {
		t.Fatalf("String: %q", got)
	}
	moved := base.Clone()
	moved.Port, moved.Tunnel.User = 6432, "root"
	ch := base.Endpoint().Changes(moved.Endpoint())
	if len(ch) != 2 || !strings.Contains(ch[0], "port 5432 → 6432") || !strings.Contains(ch[1], "jump@bastion:22 → root@bastion:22") {
		t.Fatalf("Changes: %q", ch)
	}
	if base.Endpoint().SameAddress(moved.Endpoint()) || base.Endpoint().Key() == moved.Endpoint().Key() {
		t.Fatal("a moved endpoint compares equal")
	}
	direct := base.Clone()
	direct.Tunnel = nil
	if base.Endpoint().SameAddress(direct.Endpoint()) {
		t.Fatal("dropping the bastion kept the endpoint")
	}
	// Field values cannot run into each other in the key.
	a := Spec{Host: "h", Port: 1, User: `u";hop="x`}
	b := Spec{Host: "h", Port: 1, User: "u", Tunnel: &Tunnel{Host: "x", User: ""}}
	if a.Endpoint().Key() == b.Endpoint().Key() {
		t.Fatal("ambiguous endpoint key")
	}
	p := PasswordAgainProblem(base.Endpoint(), moved.Endpoint())
	if p.Field != "password" || !strings.HasPrefix(p.Problem, "enter the password again: the endpoint or how it is verified changed (port 5432 → 6432") {
		t.Fatalf("problem: %+v", p)
	}
}

func TestRequireAuth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode      SSLMode
		set, want string
	}{
		{SSLDisable, "", "!password"},
		{SSLPrefer, "", "!password"},
		{SSLRequire, "", "!password"},
		{SSLVerifyCA, "", ""},
		{SSLVerifyFull, "", ""},
		{SSLDisable, "scram-sha-256", "scram-sha-256"},
		{SSLVerifyFull, "!password,!md5", "!password,!md5"},
	} {
		s := Spec{SSLMode: tc.mode, RequireAuth: tc.set}
		if got := s.EffectiveRequireAuth(); got != tc.want {
			t.Errorf("%s %q: effective %q, want %q", tc.mode, tc.set, got, tc.want)
		}
		cfgSpec := Spec{Host: "h", Port: 5432, Database: "d", User: "u", SSLMode: tc.mode, RequireAuth: tc.set}
		cfg, err := cfgSpec.PgxConfig()
		if err != nil || cfg.RequireAuth != tc.want {
			t.Errorf("%s %q: pgx require_auth %q, %v", tc.mode, tc.set, cfg.RequireAuth, err)
		}
	}
	for _, tc := range []struct {
		policy string
		method string
		want   bool
	}{
		{"scram-sha-256", "scram-sha-256", true},
		{"scram-sha-256", "password", false},
		{"!password,!md5", "md5", false},
		{"!password,!md5", "scram-sha-256", true},
		{"password,md5", "password", true},
	} {
		s := Spec{SSLMode: SSLDisable, RequireAuth: tc.policy}
		if got := s.AcceptsAuth(tc.method); got != tc.want {
			t.Errorf("%q accepts %s: %v", tc.policy, tc.method, got)
		}
	}
	if (&Spec{SSLMode: SSLVerifyFull}).AcceptsAuth("password") != true {
		t.Error("verify-full refuses clear text by default")
	}
	for _, bad := range []string{"scram", "password,!md5", "md5,md5", "!!password"} {
		if err := validateRequireAuth(bad); err == nil {
			t.Errorf("require_auth %q accepted", bad)
		}
	}
	for _, good := range []string{"", "scram-sha-256", "!password,!md5", "password, scram-sha-256"} {
		if err := validateRequireAuth(good); err != nil {
			t.Errorf("require_auth %q: %v", good, err)
		}
	}
}

// TestEndpointKeyOfOneBastionUnchanged pins the endpoint key of a
// connection with one bastion as it was before hops: stored passwords are
// sealed with it, so any change would make them fail to open.
func TestEndpointKeyOfOneBastionUnchanged(t *testing.T) {
	t.Parallel()
	s := Spec{Host: "DB.internal", Port: 5432, User: "dbt", Tunnel: &Tunnel{Host: "Bastion", Port: 22, User: "jump"}}
	const want = `db="db.internal":5432:"dbt";hop="bastion":22:"jump"`
	if got := s.Endpoint().Key(); got != want {
		t.Fatalf("endpoint key = %s, want %s", got, want)
	}
	var viaHops Spec
	viaHops.Host, viaHops.Port, viaHops.User = s.Host, s.Port, s.User
	viaHops.SetHops([]Hop{{Host: "Bastion", Port: 22, User: "jump"}})
	if got := viaHops.Endpoint().Key(); got != want {
		t.Fatalf("endpoint key of the same bastion given as a list of one hop = %s, want %s", got, want)
	}
	three := s.Clone()
	three.Tunnel.Next = []Hop{{Host: "b2", Port: 22, User: "u2"}, {Host: "b3", Port: 2222, User: "u3"}}
	if got := three.Endpoint().Key(); got != want+`;hop="b2":22:"u2";hop="b3":2222:"u3"` {
		t.Fatalf("endpoint key of three hops = %s", got)
	}
	// Reordering hops changes the endpoint.
	swapped := three.Clone()
	swapped.Tunnel.Next[0], swapped.Tunnel.Next[1] = swapped.Tunnel.Next[1], swapped.Tunnel.Next[0]
	if three.Endpoint().SameAddress(swapped.Endpoint()) {
		t.Fatal("reordered hops compare equal")
	}
}

// TestEndpointTrust checks which changes of how an endpoint is verified
// count as leaving it (a stored credential needs giving again) and which
// are stricter (nothing needed).
func TestEndpointTrust(t *testing.T) {
	t.Parallel()
	base := Spec{Host: "db", Port: 5432, User: "dbt", SSLMode: SSLRequire,
		Tunnel: &Tunnel{Host: "bastion", Port: 22, User: "jump", ProxyCommand: []string{"aws", "ssm", "start-session"},
			HostAuthorities: []string{"@cert-authority *.corp ssh-ed25519 AAAAone"}}}
	for _, tc := range []struct {
		name   string
		change func(*Spec)
		weaker string // "" when stricter or the same
	}{
		{"sslmode lower", func(s *Spec) { s.SSLMode = SSLPrefer }, "sslmode require → prefer"},
		{"verify-full against the public CAs", func(s *Spec) { s.SSLMode = SSLVerifyFull }, ""},
		// A CA given anew is anyone's: the server it vouches for would be
		// sent the password in clear text, refused before.
		{"verify-full with a CA given anew", func(s *Spec) { s.SSLMode, s.SSLRootCert = SSLVerifyFull, "CA" }, "require_auth now accepts password (with sslmode verify-full the default require_auth accepts it from a server whose certificate is verified, but a CA certificate given now is not yet proven"},
		{"verify-ca against the public CAs", func(s *Spec) { s.SSLMode = SSLVerifyCA }, "require_auth now accepts password (with sslmode verify-ca the default require_auth accepts it from a server whose certificate is verified, but verify-ca against the public CAs proves nothing"},
		{"verify-full with a CA given anew, only SCRAM", func(s *Spec) {
			s.SSLMode, s.SSLRootCert, s.RequireAuth = SSLVerifyFull, "CA", "scram-sha-256"
		}, ""},
		{"clear text accepted unverified", func(s *Spec) { s.RequireAuth = "password,scram-sha-256" }, "require_auth now accepts password"},
		{"clear text no longer refused", func(s *Spec) { s.RequireAuth = "!gss" }, "require_auth now accepts password"},
		{"only SCRAM", func(s *Spec) { s.RequireAuth = "scram-sha-256" }, ""},
		{"another proxy command", func(s *Spec) { s.Tunnel.ProxyCommand = []string{"socat", "STDIO", "TCP:elsewhere:22"} }, "the SSH proxy command"},
		{"no proxy command", func(s *Spec) { s.Tunnel.ProxyCommand = nil }, "the SSH proxy command"},
		{"host CA added", func(s *Spec) {
			s.Tunnel.HostAuthorities = append(s.Tunnel.HostAuthorities, "@cert-authority * ssh-ed25519 AAAAtwo")
		}, "host_authorities"},
		{"key revoked", func(s *Spec) {
			s.Tunnel.HostAuthorities = append(s.Tunnel.HostAuthorities, "@revoked * ssh-ed25519 AAAAold")
		}, ""},
		{"host CA removed", func(s *Spec) { s.Tunnel.HostAuthorities = nil }, ""},
		// An entry may hold several lines: a CA behind a revocation counts.
		{"host CA in an entry of several lines", func(s *Spec) {
			s.Tunnel.HostAuthorities = append(s.Tunnel.HostAuthorities, "@revoked * ssh-ed25519 AAAAold\n@cert-authority * ssh-ed25519 AAAAevil")
		}, "host_authorities"},
		{"the same lines as one entry", func(s *Spec) {
			s.Tunnel.HostAuthorities = []string{"@CERT-AUTHORITY *.corp ssh-ed25519 AAAAone\n# a comment\n"}
		}, ""},
		{"spaces in a host CA line", func(s *Spec) { s.Tunnel.HostAuthorities = []string{" @cert-authority  *.corp ssh-ed25519 AAAAone "} }, ""},
	} {
		next := base.Clone()
		tc.change(&next)
		ch := base.Endpoint().Changes(next.Endpoint())
		switch {
		case tc.weaker == "" && len(ch) > 0:
			t.Errorf("%s: counted as verifying less: %q", tc.name, ch)
		case tc.weaker != "" && (len(ch) != 1 || !strings.Contains(ch[0], tc.weaker)):
			t.Errorf("%s: changes %q, want one naming %q", tc.name, ch, tc.weaker)
		}
		if got := base.Endpoint().Covers(next.Endpoint()); got != (tc.weaker == "") {
			t.Errorf("%s: Covers = %v", tc.name, got)
		}
		if base.Endpoint().Key() != next.Endpoint().Key() {
			t.Errorf("%s: the sealed key changed with how the endpoint is verified", tc.name)
		}
	}
	// A revocation taken back lets a key in again.
	revoked := base.Clone()
	revoked.Tunnel.HostAuthorities = append(revoked.Tunnel.HostAuthorities, "@revoked * ssh-ed25519 AAAAold")
	if ch := revoked.Endpoint().Changes(base.Endpoint()); len(ch) != 1 || !strings.Contains(ch[0], "no longer revoked") {
		t.Errorf("a revocation removed: %q", ch)
	}
	// Under verify-full another CA is another endpoint; a verified server
	// may be sent any method.
	full := Spec{Host: "db", Port: 5432, User: "dbt", SSLMode: SSLVerifyFull, SSLRootCert: "CA one", RequireAuth: "scram-sha-256"}
	other := full.Clone()
	other.SSLRootCert = "CA two"
	if ch := full.Endpoint().Changes(other.Endpoint()); len(ch) != 1 || !strings.Contains(ch[0], "ssl_root_cert") {
		t.Errorf("another CA under verify-full: %q", ch)
	}
	anyMethod := full.Clone()
	anyMethod.RequireAuth = ""
	if !full.Endpoint().Covers(anyMethod.Endpoint()) {
		t.Error("accepting any method from a verified server counted as verifying less")
	}
	// verify-ca against the public CAs proves no server: any holder of a
	// public certificate passes, so accepting clear text from it needs
	// the password again, even though the CAs are the same as before.
	publicCA := Spec{Host: "db", Port: 5432, User: "dbt", SSLMode: SSLVerifyCA, RequireAuth: "scram-sha-256"}
	clear := publicCA.Clone()
	clear.RequireAuth = "password,scram-sha-256"
	if ch := publicCA.Endpoint().Changes(clear.Endpoint()); len(ch) != 1 || !strings.Contains(ch[0], "require_auth now accepts password") {
		t.Errorf("clear text accepted under verify-ca against the public CAs: %q", ch)
	}
	privateCA := publicCA.Clone()
	privateCA.SSLRootCert = "CA one"
	clear = privateCA.Clone()
	clear.RequireAuth = ""
	if !privateCA.Endpoint().Covers(clear.Endpoint()) {
		t.Error("any method accepted under verify-ca by the same CA given before counted as verifying less")
	}
	ca := full.Clone()
	ca.SSLMode = SSLVerifyCA
	if ch := full.Endpoint().Changes(ca.Endpoint()); len(ch) != 1 || ch[0] != "sslmode verify-full → verify-ca" {
		t.Errorf("verify-full → verify-ca: %q", ch)
	}
}
