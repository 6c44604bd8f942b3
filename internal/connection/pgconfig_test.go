package connection

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/secret"
)

func mustPgxConfig(t *testing.T, s Spec) *pgx.ConnConfig {
	t.Helper()
	cfg, err := s.PgxConfig()
	if err != nil {
		t.Fatalf("PgxConfig(sslmode=%s): %v", s.SSLMode, err)
	}
	return cfg
}

// checkTarget checks the fields that come from the spec whatever the sslmode.
func checkTarget(t *testing.T, cfg *pgx.ConnConfig, s Spec) {
	t.Helper()
	if cfg.Host != s.Host || cfg.Port != uint16(s.Port) || cfg.Database != s.Database ||
		cfg.User != s.User || cfg.Password != s.Password.Reveal() {
		t.Errorf("config host=%q port=%d database=%q user=%q password-matches=%v; want host=%q port=%d database=%q user=%q",
			cfg.Host, cfg.Port, cfg.Database, cfg.User, cfg.Password == s.Password.Reveal(),
			s.Host, s.Port, s.Database, s.User)
	}
	if cfg.ConnectTimeout != DefaultConnectTimeout {
		t.Errorf("ConnectTimeout = %s, want %s", cfg.ConnectTimeout, DefaultConnectTimeout)
	}
	if got := cfg.RuntimeParams["application_name"]; got != ApplicationName {
		t.Errorf("application_name = %q, want %q", got, ApplicationName)
	}
	if cfg.ValidateConnect != nil {
		t.Error("ValidateConnect is set: target_session_attrs should be any")
	}
	if cfg.SSLNegotiation == "direct" {
		t.Error("SSLNegotiation is direct")
	}
	for _, fb := range cfg.Fallbacks {
		if fb.Host != s.Host || fb.Port != uint16(s.Port) {
			t.Errorf("fallback goes to %s:%d, want %s:%d", fb.Host, fb.Port, s.Host, s.Port)
		}
	}
}

func TestPgxConfigSSLModes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode  SSLMode
		check func(t *testing.T, cfg *pgx.ConnConfig)
	}{
		{SSLDisable, func(t *testing.T, cfg *pgx.ConnConfig) {
			if cfg.TLSConfig != nil {
				t.Error("disable: TLSConfig is set")
			}
			if len(cfg.Fallbacks) != 0 {
				t.Errorf("disable: %d fallbacks, want none", len(cfg.Fallbacks))
			}
		}},
		{SSLAllow, func(t *testing.T, cfg *pgx.ConnConfig) {
			if cfg.TLSConfig != nil {
				t.Error("allow: first attempt uses TLS, want plain")
			}
			if len(cfg.Fallbacks) != 1 {
				t.Fatalf("allow: %d fallbacks, want 1", len(cfg.Fallbacks))
			}
			fb := cfg.Fallbacks[0].TLSConfig
			if fb == nil {
				t.Fatal("allow: fallback is plain, want TLS")
			}
			if !fb.InsecureSkipVerify || fb.MinVersion != tls.VersionTLS12 {
				t.Errorf("allow: fallback TLS InsecureSkipVerify=%v MinVersion=%x", fb.InsecureSkipVerify, fb.MinVersion)
			}
		}},
		{SSLPrefer, func(t *testing.T, cfg *pgx.ConnConfig) {
			if cfg.TLSConfig == nil {
				t.Fatal("prefer: first attempt is plain, want TLS")
			}
			if !cfg.TLSConfig.InsecureSkipVerify || cfg.TLSConfig.MinVersion != tls.VersionTLS12 {
				t.Errorf("prefer: TLS InsecureSkipVerify=%v MinVersion=%x", cfg.TLSConfig.InsecureSkipVerify, cfg.TLSConfig.MinVersion)
			}
			if len(cfg.Fallbacks) != 1 {
				t.Fatalf("prefer: %d fallbacks, want 1", len(cfg.Fallbacks))
			}
			if cfg.Fallbacks[0].TLSConfig != nil {
				t.Error("prefer: fallback uses TLS, want plain")
			}
		}},
		{SSLRequire, func(t *testing.T, cfg *pgx.ConnConfig) {
			c := cfg.TLSConfig
			if c == nil {
				t.Fatal("require: no TLS")
			}
			if !c.InsecureSkipVerify {
				t.Error("require: verifies the server; libpq's require does not")
			}
			if c.VerifyConnection != nil || c.RootCAs != nil {
				t.Error("require: has verification settings")
			}
			if c.MinVersion != tls.VersionTLS12 {
				t.Errorf("require: MinVersion = %x", c.MinVersion)
			}
			if len(cfg.Fallbacks) != 0 {
				t.Errorf("require: %d fallbacks, want none", len(cfg.Fallbacks))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.mode), func(t *testing.T) {
			t.Parallel()
			s := validSpec()
			s.SSLMode = tt.mode
			cfg := mustPgxConfig(t, s)
			checkTarget(t, cfg, s)
			tt.check(t, cfg)
		})
	}
}

func TestPgxConfigVerifyFull(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "Root")
	other := newCA(t, "Other Root")
	for _, host := range []string{"db.internal", "10.0.0.7", "2001:db8::5"} {
		t.Run(host, func(t *testing.T) {
			t.Parallel()
			s := validSpec()
			s.Host, s.SSLMode, s.SSLRootCert = host, SSLVerifyFull, ca.pem
			cfg := mustPgxConfig(t, s)
			checkTarget(t, cfg, s)
			c := cfg.TLSConfig
			if c == nil {
				t.Fatal("no TLS")
			}
			if len(cfg.Fallbacks) != 0 {
				t.Errorf("%d fallbacks, want none", len(cfg.Fallbacks))
			}
			if c.InsecureSkipVerify {
				t.Error("InsecureSkipVerify is set")
			}
			if c.ServerName != host {
				t.Errorf("ServerName = %q, want %q", c.ServerName, host)
			}
			want := x509.NewCertPool()
			want.AddCert(ca.cert)
			if c.RootCAs == nil || !c.RootCAs.Equal(want) {
				t.Error("RootCAs is not exactly the spec's CA")
			}

			// Real handshakes: right CA and name pass, anything else fails.
			if err := handshake(t, c, ca.issue(t, host)); err != nil {
				t.Errorf("handshake with a certificate for %s from the CA: %v", host, err)
			}
			if err := handshake(t, c, ca.issue(t, "other.internal")); err == nil {
				t.Error("handshake accepted a certificate for another host")
			}
			err := handshake(t, c, other.issue(t, host))
			var verr *tls.CertificateVerificationError
			if !errors.As(err, &verr) {
				t.Errorf("handshake with a certificate from another CA: %v, want *tls.CertificateVerificationError", err)
			}
		})
	}
}

func TestPgxConfigVerifyCA(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "Root")
	inter := ca.intermediate(t, "Intermediate")
	other := newCA(t, "Other Root")

	s := validSpec()
	s.SSLMode, s.SSLRootCert = SSLVerifyCA, ca.pem
	cfg := mustPgxConfig(t, s)
	checkTarget(t, cfg, s)
	c := cfg.TLSConfig
	if c == nil {
		t.Fatal("no TLS")
	}
	if len(cfg.Fallbacks) != 0 {
		t.Errorf("%d fallbacks, want none", len(cfg.Fallbacks))
	}
	if c.VerifyConnection == nil {
		t.Fatal("VerifyConnection is not set: the chain would not be checked")
	}
	if !c.InsecureSkipVerify {
		t.Error("InsecureSkipVerify is not set: the host name would be checked")
	}

	leaf := func(tc tls.Certificate) []*x509.Certificate {
		var out []*x509.Certificate
		for _, der := range tc.Certificate {
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, cert)
		}
		return out
	}
	tests := []struct {
		name    string
		chain   []*x509.Certificate
		wantErr bool
		verr    bool // want *tls.CertificateVerificationError
	}{
		{name: "signed by the CA", chain: leaf(ca.issue(t, s.Host))},
		{name: "other host name", chain: leaf(ca.issue(t, "elsewhere.example.com"))},
		{name: "through an intermediate", chain: leaf(inter.issue(t, s.Host, inter.cert))},
		{name: "intermediate missing", chain: leaf(inter.issue(t, s.Host)), wantErr: true, verr: true},
		{name: "signed by another CA", chain: leaf(other.issue(t, s.Host)), wantErr: true, verr: true},
		{name: "the other CA itself", chain: []*x509.Certificate{other.cert}, wantErr: true, verr: true},
		{name: "no certificate", chain: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := c.VerifyConnection(tls.ConnectionState{PeerCertificates: tt.chain})
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("VerifyConnection: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("VerifyConnection accepted the chain")
			}
			var verr *tls.CertificateVerificationError
			if tt.verr {
				if !errors.As(err, &verr) {
					t.Fatalf("VerifyConnection = %v (%T), want *tls.CertificateVerificationError", err, err)
				}
				if len(verr.UnverifiedCertificates) != len(tt.chain) || !verr.UnverifiedCertificates[0].Equal(tt.chain[0]) {
					t.Error("UnverifiedCertificates is not the peer chain")
				}
				var unknown x509.UnknownAuthorityError
				if !errors.As(err, &unknown) {
					t.Errorf("VerifyConnection = %v, want an x509.UnknownAuthorityError inside", err)
				}
			}
		})
	}

	// Real handshakes.
	if err := handshake(t, c, ca.issue(t, "any-name.example.com")); err != nil {
		t.Errorf("handshake with a certificate from the CA: %v", err)
	}
	if err := handshake(t, c, other.issue(t, s.Host)); err == nil {
		t.Error("handshake accepted a certificate from another CA")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("handshake error %q does not mention the certificate", err)
	}
}

func TestPgxConfigRequireAcceptsAnyCertificate(t *testing.T) {
	t.Parallel()
	other := newCA(t, "Anyone")
	for _, mode := range []SSLMode{SSLPrefer, SSLRequire} {
		s := validSpec()
		s.SSLMode = mode
		cfg := mustPgxConfig(t, s)
		if err := handshake(t, cfg.TLSConfig, other.issue(t, "whatever")); err != nil {
			t.Errorf("%s: handshake: %v", mode, err)
		}
	}
}

func TestPgxConfigSystemRoots(t *testing.T) {
	t.Parallel()
	if _, err := x509.SystemCertPool(); err != nil {
		t.Skipf("no system certificate pool here: %v", err)
	}
	for _, mode := range []SSLMode{SSLVerifyCA, SSLVerifyFull} {
		s := validSpec()
		s.SSLMode = mode
		cfg := mustPgxConfig(t, s)
		if cfg.TLSConfig == nil {
			t.Fatalf("%s: no TLS", mode)
		}
		if mode == SSLVerifyFull && (cfg.TLSConfig.RootCAs == nil || cfg.TLSConfig.ServerName != s.Host) {
			t.Errorf("%s: RootCAs=%v ServerName=%q", mode, cfg.TLSConfig.RootCAs != nil, cfg.TLSConfig.ServerName)
		}
		// A private CA's certificate is not trusted by the system.
		if err := handshake(t, cfg.TLSConfig, newCA(t, "Private").issue(t, s.Host)); err == nil {
			t.Errorf("%s: system roots accepted a private CA", mode)
		}
	}
}

func TestPgxConfigInvalidRootCert(t *testing.T) {
	t.Parallel()
	for _, mode := range []SSLMode{SSLVerifyCA, SSLVerifyFull} {
		s := validSpec()
		s.SSLMode, s.SSLRootCert = mode, "garbage"
		cfg, err := s.PgxConfig()
		if err == nil {
			t.Fatalf("%s: PgxConfig = %v, want error", mode, cfg)
		}
		for _, want := range []string{"connection wh", "ssl_root_cert", "no PEM certificate"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q lacks %q", mode, err, want)
			}
		}
		if strings.Contains(err.Error(), passwordCanary) {
			t.Errorf("error reveals the password: %v", err)
		}
	}
}

func TestPgxConfigQuoting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*Spec)
	}{
		{"quotes and backslashes", func(s *Spec) {
			s.Database, s.User = `it's a \ "db"`, `o'brien\`
			s.Password = secret.New(`p'a\ss w"ord =x`)
		}},
		{"keyword-like values", func(s *Spec) {
			s.Database, s.User = "analytics sslmode=disable host=evil", "dbt' host='evil"
			s.Password = secret.New("x' sslmode='disable")
		}},
		{"unicode and spaces", func(s *Spec) {
			s.Database, s.User = "Lager häus", "  spaced  "
			s.Password = secret.New("pässwörd ")
		}},
		{"IPv6 host", func(s *Spec) { s.Host, s.Port = "2001:db8::5", 6432 }},
		{"empty password", func(s *Spec) { s.Password = secret.Value{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := validSpec()
			s.SSLMode = SSLRequire
			tt.edit(&s)
			cfg := mustPgxConfig(t, s)
			checkTarget(t, cfg, s)
			if cfg.TLSConfig == nil || len(cfg.Fallbacks) != 0 {
				t.Error("a value in the spec changed the TLS setup")
			}
		})
	}
}

func TestPgxConfigPasswordNotPrinted(t *testing.T) {
	t.Parallel()
	s := validSpec()
	cfg := mustPgxConfig(t, s)
	if cfg.Password != passwordCanary {
		t.Fatalf("config password = %q, want the spec's", cfg.Password)
	}
	for _, verb := range []string{"%v", "%+v", "%#v"} {
		if out := fmt.Sprintf(verb, s); strings.Contains(out, passwordCanary) {
			t.Errorf("Sprintf(%q, spec) reveals the password: %s", verb, out)
		}
		if out := fmt.Sprintf(verb, &s); strings.Contains(out, passwordCanary) {
			t.Errorf("Sprintf(%q, &spec) reveals the password: %s", verb, out)
		}
	}
	// The connection string pgx keeps never held the password.
	if strings.Contains(cfg.ConnString(), passwordCanary) {
		t.Errorf("ConnString reveals the password: %s", cfg.ConnString())
	}
}

// TestPgxConfigIgnoresEnvironment sets PG* variables, so it cannot run in
// parallel.
func TestPgxConfigIgnoresEnvironment(t *testing.T) {
	dir := t.TempDir()
	passfile := filepath.Join(dir, "pgpass")
	if err := os.WriteFile(passfile, []byte("*:*:*:*:from-passfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PGHOST":               "env-host.example.com",
		"PGPORT":               "6543",
		"PGDATABASE":           "env_db",
		"PGUSER":               "env_user",
		"PGPASSWORD":           "from-env",
		"PGPASSFILE":           passfile,
		"PGSSLMODE":            "verify-full",
		"PGSSLROOTCERT":        filepath.Join(dir, "missing-root.crt"),
		"PGSSLNEGOTIATION":     "direct",
		"PGCONNECT_TIMEOUT":    "1",
		"PGAPPNAME":            "env-app",
		"PGTARGETSESSIONATTRS": "read-only",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	ca := newCA(t, "Root")
	for _, mode := range SSLModes() {
		for _, pw := range []string{passwordCanary, ""} {
			t.Run(fmt.Sprintf("%s/password=%v", mode, pw != ""), func(t *testing.T) {
				s := validSpec()
				s.SSLMode = mode
				s.Password = secret.New(pw)
				if mode.Verifies() {
					s.SSLRootCert = ca.pem
				}
				cfg := mustPgxConfig(t, s)
				checkTarget(t, cfg, s)
				if cfg.Password != pw {
					t.Errorf("password comes from the environment (got %q)", cfg.Password)
				}
				if cfg.ConnectTimeout != 10*time.Second {
					t.Errorf("ConnectTimeout = %s", cfg.ConnectTimeout)
				}
				switch mode {
				case SSLDisable, SSLAllow:
					if cfg.TLSConfig != nil {
						t.Error("PGSSLMODE turned TLS on")
					}
				default:
					if cfg.TLSConfig == nil {
						t.Error("no TLS")
					}
				}
				if mode == SSLVerifyFull && cfg.TLSConfig != nil {
					want := x509.NewCertPool()
					want.AddCert(ca.cert)
					if !cfg.TLSConfig.RootCAs.Equal(want) {
						t.Error("RootCAs is not the spec's CA")
					}
				}
			})
		}
	}
}

func TestOptionSets(t *testing.T) {
	for _, tc := range []struct {
		options string
		want    bool
	}{
		{"", false},
		{"-c role=x", true},
		{"-crole=x", true},
		{"--role=x", true},
		{"  -c   ROLE=x ", true},
		{"-c search_path=a -c role=b", true},
		{"-c search_path=role=x", false},
		{"-c role", false},
		{`-c application_name=a\ -c\ role=x`, false}, // one escaped argument
		{"-c rolex=1", false},
		{"role=x", false},
	} {
		if got := OptionSets(tc.options, "role"); got != tc.want {
			t.Errorf("OptionSets(%q, role) = %v, want %v", tc.options, got, tc.want)
		}
	}
}
