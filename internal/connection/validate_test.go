package connection

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// validationCase changes a valid spec; wantField is the one field expected
// to fail ("" for a valid spec), and wantText the phrases its problem must
// contain (what is wrong and what is accepted).
type validationCase struct {
	name      string
	mutate    func(*Spec)
	wantField string
	wantText  []string
}

// runValidationCases checks that each case yields exactly one problem on
// the expected field, or none.
func runValidationCases(t *testing.T, tests []validationCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := validSpec()
			tt.mutate(&s)
			err := s.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ve *fielderr.Error
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v (%T), want *fielderr.Error on %s", err, err, tt.wantField)
			}
			if len(ve.Problems) != 1 {
				t.Fatalf("Validate gave %d problems, want 1 on %s:\n%v", len(ve.Problems), tt.wantField, err)
			}
			p := ve.Problems[0]
			if p.Field != tt.wantField {
				t.Errorf("problem on field %q, want %q (%s)", p.Field, tt.wantField, p.Problem)
			}
			for _, want := range tt.wantText {
				if !strings.Contains(p.Problem, want) {
					t.Errorf("problem %q lacks %q", p.Problem, want)
				}
			}
		})
	}
}

func TestValidateValidSpec(t *testing.T) {
	t.Parallel()
	s := validSpec()
	if err := s.Validate(); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	s.Tunnel = nil
	if err := s.Validate(); err != nil {
		t.Fatalf("valid spec without tunnel: %v", err)
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	const accepted = "lower-case letters, digits, '-' and '_'"
	set := func(v string) func(*Spec) { return func(s *Spec) { s.Name = v } }
	runValidationCases(t, []validationCase{
		{name: "simple", mutate: set("wh")},
		{name: "digits first", mutate: set("0wh")},
		{name: "dash and underscore", mutate: set("wh-prod_1")},
		{name: "trailing dash", mutate: set("wh-")},
		{name: "single char", mutate: set("a")},
		{name: "63 chars", mutate: set(strings.Repeat("a", 63))},
		{name: "empty", mutate: set(""), wantField: "name", wantText: []string{"required", accepted}},
		{name: "64 chars", mutate: set(strings.Repeat("a", 64)), wantField: "name", wantText: []string{"too long", "64", "at most 63"}},
		{name: "upper case", mutate: set("Wh"), wantField: "name", wantText: []string{`"Wh"`, accepted}},
		{name: "all upper case", mutate: set("PROD"), wantField: "name", wantText: []string{`"PROD"`, accepted}},
		{name: "leading dash", mutate: set("-wh"), wantField: "name", wantText: []string{`"-wh"`, accepted, "starting with a letter or digit"}},
		{name: "leading underscore", mutate: set("_wh"), wantField: "name", wantText: []string{accepted, "starting with a letter or digit"}},
		{name: "dot", mutate: set("wh.prod"), wantField: "name", wantText: []string{accepted}},
		{name: "space", mutate: set("wh prod"), wantField: "name", wantText: []string{accepted}},
		{name: "slash", mutate: set("wh/prod"), wantField: "name", wantText: []string{accepted}},
		{name: "non-ascii", mutate: set("lagerhäus"), wantField: "name", wantText: []string{accepted}},
		{name: "trailing newline", mutate: set("wh\n"), wantField: "name", wantText: []string{accepted}},
	})
}

func TestValidateFlavor(t *testing.T) {
	t.Parallel()
	set := func(v Flavor) func(*Spec) { return func(s *Spec) { s.Flavor = v } }
	const accepted = "use postgres, alloydb or lakebase"
	runValidationCases(t, []validationCase{
		{name: "postgres", mutate: set(Postgres)},
		{name: "alloydb", mutate: set(AlloyDB)},
		{name: "lakebase", mutate: set(Lakebase), wantField: "sslmode"}, // prefer is refused; see TestValidateLakebase
		{name: "empty", mutate: set(""), wantField: "flavor", wantText: []string{`""`, accepted}},
		{name: "mysql", mutate: set("mysql"), wantField: "flavor", wantText: []string{`"mysql"`, accepted}},
		{name: "capitalised", mutate: set("Postgres"), wantField: "flavor", wantText: []string{`"Postgres"`, accepted}},
		{name: "label instead of value", mutate: set("PostgreSQL"), wantField: "flavor", wantText: []string{accepted}},
	})
}

func TestValidateHost(t *testing.T) {
	t.Parallel()
	const accepted = "accepted is a DNS name"
	long63 := strings.Repeat("a", 63)
	// 63+1+63+1+63+1+61 = 253 characters.
	name253 := long63 + "." + long63 + "." + long63 + "." + strings.Repeat("b", 61)
	tests := []struct {
		host     string
		wantText []string // nil: valid
	}{
		{host: "db.internal"},
		{host: "db"},
		{host: "localhost"},
		{host: "DB.Example.COM"},
		{host: "db.example.com."},
		{host: "my-db-1.eu-west-1.rds.amazonaws.com"},
		{host: "_srv.example.com"},
		{host: "db_1.internal"},
		{host: "123.example.com"},
		{host: "10.0.0.7"},
		{host: "127.0.0.1"},
		{host: "255.255.255.255"},
		{host: "::1"},
		{host: "fe80::1"},
		{host: "2001:db8::5"},
		{host: "2001:0db8:0000:0000:0000:0000:0000:0005"},
		{host: "::ffff:10.0.0.1"},
		{host: long63 + ".example.com"},
		{host: name253},
		{host: name253 + "."},

		{host: "", wantText: []string{"required", "a DNS name, an IPv4 address or an IPv6 address"}},
		{host: " db", wantText: []string{"white space", accepted}},
		{host: "db ", wantText: []string{"white space", accepted}},
		{host: "db\n", wantText: []string{"white space", accepted}},
		{host: "d b", wantText: []string{"white space", accepted}},
		{host: "db\tx", wantText: []string{"white space", accepted}},
		{host: "[::1]", wantText: []string{"without brackets", "e.g. ::1"}},
		{host: "[2001:db8::5]", wantText: []string{"without brackets", "e.g. 2001:db8::5"}},
		{host: "[::1]:5432", wantText: []string{"not a valid IPv6 address"}},
		{host: "db:5432", wantText: []string{"includes a port", "port in its own field"}},
		{host: "10.0.0.7:5432", wantText: []string{"includes a port", "port in its own field"}},
		{host: "postgres://x", wantText: []string{"looks like a URL", "only the host name", "db.example.com"}},
		{host: "postgresql://user:pw@db:5432/analytics", wantText: []string{"looks like a URL", "only the host name"}},
		{host: "fe80::1%eth0", wantText: []string{"zones are not accepted"}},
		{host: "fe80::1%25eth0", wantText: []string{"zones are not accepted"}},
		{host: "2001:db8::5::1", wantText: []string{"not a valid IPv6 address"}},
		{host: "1:2:3", wantText: []string{"not a valid IPv6 address"}},
		{host: strings.Repeat("a", 64) + ".example.com", wantText: []string{"not a valid host name", accepted, "at most 63 characters"}},
		{host: name253 + "b", wantText: []string{"254 characters", "at most 253"}},
		{host: "-db.internal", wantText: []string{"not a valid host name", accepted}},
		{host: "db-.internal", wantText: []string{"not a valid host name", accepted}},
		{host: "db..internal", wantText: []string{"not a valid host name", accepted}},
		{host: ".db", wantText: []string{"not a valid host name", accepted}},
		{host: ".", wantText: []string{"not a valid host name", accepted}},
		{host: "db.internal..", wantText: []string{"not a valid host name", accepted}},
		{host: "db/analytics", wantText: []string{"not a valid host name", accepted}},
		{host: "/var/run/postgresql", wantText: []string{"not a valid host name", accepted}},
		{host: "db,replica", wantText: []string{"not a valid host name", accepted}},
		{host: "user@db", wantText: []string{"not a valid host name", accepted}},
		{host: "db'x", wantText: []string{"not a valid host name", accepted}},
		{host: "dätenbank.de", wantText: []string{"not a valid host name", accepted}},
		{host: "db\x00", wantText: []string{"not a valid host name", accepted}},
		{host: "1.2.3.4%eth0", wantText: []string{"not a valid host name", accepted}},
	}
	var cases []validationCase
	for _, tt := range tests {
		for _, tunnel := range []bool{false, true} {
			c := validationCase{name: tt.host, wantText: tt.wantText}
			field := "host"
			if tunnel {
				c.name = "ssh_tunnel/" + tt.host
				field = "ssh_tunnel.host"
				c.mutate = func(s *Spec) { s.Tunnel.Host = tt.host }
			} else {
				c.mutate = func(s *Spec) { s.Host = tt.host }
			}
			if tt.wantText != nil {
				c.wantField = field
			}
			cases = append(cases, c)
		}
		// ValidateHost itself agrees.
		if err := ValidateHost(tt.host); (err == nil) != (tt.wantText == nil) {
			t.Errorf("ValidateHost(%q) = %v", tt.host, err)
		}
	}
	runValidationCases(t, cases)
}

func TestValidatePort(t *testing.T) {
	t.Parallel()
	var cases []validationCase
	for _, tunnel := range []bool{false, true} {
		field := "port"
		set := func(p int) func(*Spec) { return func(s *Spec) { s.Port = p } }
		if tunnel {
			field = "ssh_tunnel.port"
			set = func(p int) func(*Spec) { return func(s *Spec) { s.Tunnel.Port = p } }
		}
		const accepted = "accepted is 1 to 65535"
		cases = append(cases,
			validationCase{name: field + "/1", mutate: set(1)},
			validationCase{name: field + "/5432", mutate: set(5432)},
			validationCase{name: field + "/65535", mutate: set(65535)},
			validationCase{name: field + "/0", mutate: set(0), wantField: field, wantText: []string{"0 is out of range", accepted}},
			validationCase{name: field + "/-1", mutate: set(-1), wantField: field, wantText: []string{"-1 is out of range", accepted}},
			validationCase{name: field + "/65536", mutate: set(65536), wantField: field, wantText: []string{"65536 is out of range", accepted}},
		)
	}
	runValidationCases(t, cases)
}

func TestValidateIdentifiers(t *testing.T) {
	t.Parallel()
	fields := []struct {
		field    string
		set      func(*Spec, string)
		required string // text of the "required" problem; "" if optional
	}{
		{"database", func(s *Spec, v string) { s.Database = v }, "required: the database name"},
		{"user", func(s *Spec, v string) { s.User = v }, "required: the database user name"},
		{"schema", func(s *Spec, v string) { s.Schema = v }, ""},
	}
	var cases []validationCase
	for _, f := range fields {
		set := func(v string) func(*Spec) { return func(s *Spec) { f.set(s, v) } }
		cases = append(cases,
			validationCase{name: f.field + "/simple", mutate: set("analytics")},
			validationCase{name: f.field + "/mixed case and spaces", mutate: set("My Data-Base")},
			validationCase{name: f.field + "/quotes", mutate: set(`o'brien "x" \ y`)},
			validationCase{name: f.field + "/unicode", mutate: set("lagerhäus")},
			validationCase{name: f.field + "/63 bytes", mutate: set(strings.Repeat("d", 63))},
			validationCase{name: f.field + "/64 bytes", mutate: set(strings.Repeat("d", 64)), wantField: f.field,
				wantText: []string{"too long (64 bytes)", "at most 63 bytes"}},
			// 32 × 2-byte runes: 32 characters but 64 bytes.
			validationCase{name: f.field + "/64 bytes of multibyte", mutate: set(strings.Repeat("ä", 32)), wantField: f.field,
				wantText: []string{"too long (64 bytes)", "at most 63 bytes"}},
			validationCase{name: f.field + "/invalid utf-8", mutate: set("ab\xffcd"), wantField: f.field,
				wantText: []string{"valid UTF-8 without NUL"}},
			validationCase{name: f.field + "/NUL", mutate: set("ab\x00cd"), wantField: f.field,
				wantText: []string{"valid UTF-8 without NUL"}},
		)
		if f.required != "" {
			cases = append(cases, validationCase{name: f.field + "/empty", mutate: set(""), wantField: f.field, wantText: []string{f.required}})
		} else {
			cases = append(cases, validationCase{name: f.field + "/empty", mutate: set("")})
		}
	}
	runValidationCases(t, cases)
}

func TestValidatePassword(t *testing.T) {
	t.Parallel()
	set := func(v string) func(*Spec) { return func(s *Spec) { s.Password = secret.New(v) } }
	runValidationCases(t, []validationCase{
		{name: "empty", mutate: set("")},
		{name: "unicode and quotes", mutate: set(`pä'ss "w\ord`)},
		{name: "4096 bytes", mutate: set(strings.Repeat("p", 4096))},
		{name: "4097 bytes", mutate: set(strings.Repeat("p", 4097)), wantField: "password", wantText: []string{"longer than 4096 bytes"}},
		{name: "NUL", mutate: set("pass\x00word"), wantField: "password", wantText: []string{"must not contain NUL"}},
	})
	// The problem text never contains the password.
	s := validSpec()
	s.Password = secret.New(passwordCanary + "\x00")
	err := s.Validate()
	if err == nil || strings.Contains(err.Error(), passwordCanary) {
		t.Errorf("Validate = %v, want an error without the password", err)
	}
}

func TestValidateSSLMode(t *testing.T) {
	t.Parallel()
	const accepted = "use disable, allow, prefer, require, verify-ca or verify-full"
	var cases []validationCase
	for _, f := range []Flavor{Postgres, AlloyDB} {
		for _, m := range SSLModes() {
			cases = append(cases, validationCase{name: string(f) + "/" + string(m), mutate: func(s *Spec) { s.Flavor, s.SSLMode = f, m }})
		}
	}
	for _, m := range []SSLMode{"", "REQUIRE", "verify_full", "verify", "true", "on"} {
		cases = append(cases, validationCase{name: "invalid/" + string(m), mutate: func(s *Spec) { s.SSLMode = m },
			wantField: "sslmode", wantText: []string{`"` + string(m) + `" is not accepted`, accepted}})
	}
	runValidationCases(t, cases)
}

func TestValidateLakebase(t *testing.T) {
	t.Parallel()
	const accepted = "use require, verify-ca or verify-full"
	set := func(m SSLMode) func(*Spec) { return func(s *Spec) { s.Flavor, s.SSLMode = Lakebase, m } }
	runValidationCases(t, []validationCase{
		{name: "require", mutate: set(SSLRequire)},
		{name: "verify-ca", mutate: set(SSLVerifyCA)},
		{name: "verify-full", mutate: set(SSLVerifyFull)},
		{name: "disable", mutate: set(SSLDisable), wantField: "sslmode", wantText: []string{`"disable"`, "Lakebase", "only accepts encrypted connections", accepted}},
		{name: "allow", mutate: set(SSLAllow), wantField: "sslmode", wantText: []string{`"allow"`, "Lakebase", accepted}},
		{name: "prefer", mutate: set(SSLPrefer), wantField: "sslmode", wantText: []string{`"prefer"`, "Lakebase", accepted}},
		// An unknown mode is reported once, as unknown.
		{name: "unknown", mutate: set("bogus"), wantField: "sslmode", wantText: []string{`"bogus" is not accepted`, "disable, allow, prefer"}},
	})
}

func TestValidateSSLRootCert(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "Test Root CA")
	ca2 := newCA(t, "Second Root CA")
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("not really a key")}))
	badCertPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")}))
	set := func(m SSLMode, cert string) func(*Spec) {
		return func(s *Spec) { s.SSLMode, s.SSLRootCert = m, cert }
	}
	const onlyVerify = "used only with sslmode verify-ca or verify-full"
	const acceptedPEM = "accepted is a PEM file with one or more -----BEGIN CERTIFICATE----- blocks"
	runValidationCases(t, []validationCase{
		{name: "verify-full with CA", mutate: set(SSLVerifyFull, ca.pem)},
		{name: "verify-ca with CA", mutate: set(SSLVerifyCA, ca.pem)},
		{name: "two CAs", mutate: set(SSLVerifyFull, ca.pem+ca2.pem)},
		{name: "text around the PEM", mutate: set(SSLVerifyFull, "Subject: Test Root CA\n"+ca.pem+"\n")},
		{name: "verify-full with system roots", mutate: set(SSLVerifyFull, "")},
		{name: "verify-ca with system roots", mutate: set(SSLVerifyCA, "")},
		{name: "disable", mutate: set(SSLDisable, ca.pem), wantField: "ssl_root_cert", wantText: []string{onlyVerify, `"disable"`}},
		{name: "allow", mutate: set(SSLAllow, ca.pem), wantField: "ssl_root_cert", wantText: []string{onlyVerify, `"allow"`}},
		{name: "prefer", mutate: set(SSLPrefer, ca.pem), wantField: "ssl_root_cert", wantText: []string{onlyVerify, `"prefer"`}},
		{name: "require", mutate: set(SSLRequire, ca.pem), wantField: "ssl_root_cert", wantText: []string{onlyVerify, `"require"`}},
		{name: "require with invalid PEM", mutate: set(SSLRequire, "garbage"), wantField: "ssl_root_cert", wantText: []string{onlyVerify}},
		{name: "not PEM", mutate: set(SSLVerifyFull, "garbage"), wantField: "ssl_root_cert", wantText: []string{"no PEM certificate found", acceptedPEM}},
		{name: "base64 without PEM armour", mutate: set(SSLVerifyFull, strings.Join(strings.Split(ca.pem, "\n")[1:3], "\n")), wantField: "ssl_root_cert", wantText: []string{acceptedPEM}},
		{name: "private key block", mutate: set(SSLVerifyCA, keyPEM), wantField: "ssl_root_cert", wantText: []string{`"PRIVATE KEY"`, "only CERTIFICATE blocks are accepted"}},
		{name: "CA then private key", mutate: set(SSLVerifyCA, ca.pem+keyPEM), wantField: "ssl_root_cert", wantText: []string{"only CERTIFICATE blocks are accepted"}},
		{name: "garbage certificate", mutate: set(SSLVerifyFull, badCertPEM), wantField: "ssl_root_cert", wantText: []string{"certificate 1:"}},
		{name: "second certificate bad", mutate: set(SSLVerifyFull, ca.pem+badCertPEM), wantField: "ssl_root_cert", wantText: []string{"certificate 2:"}},
		{name: "truncated PEM", mutate: set(SSLVerifyFull, ca.pem[:len(ca.pem)/2]), wantField: "ssl_root_cert", wantText: []string{acceptedPEM}},
	})
}

func TestParseCertificates(t *testing.T) {
	t.Parallel()
	ca := newCA(t, "One")
	ca2 := newCA(t, "Two")
	certs, err := ParseCertificates(ca.pem + ca2.pem)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[0].Equal(ca.cert) || !certs[1].Equal(ca2.cert) {
		t.Errorf("ParseCertificates gave %d certificates, want One and Two in order", len(certs))
	}
	if _, err := ParseCertificates(""); err == nil {
		t.Error("ParseCertificates(\"\") succeeded")
	}
}

func TestValidateThreads(t *testing.T) {
	t.Parallel()
	set := func(n int) func(*Spec) { return func(s *Spec) { s.Threads = n } }
	const accepted = "accepted is 1 to 256"
	runValidationCases(t, []validationCase{
		{name: "1", mutate: set(1)},
		{name: "256", mutate: set(256)},
		{name: "0", mutate: set(0), wantField: "threads", wantText: []string{"0 is out of range", accepted}},
		{name: "-1", mutate: set(-1), wantField: "threads", wantText: []string{"-1 is out of range", accepted}},
		{name: "257", mutate: set(257), wantField: "threads", wantText: []string{"257 is out of range", accepted}},
	})
}

func TestValidateSSHUser(t *testing.T) {
	t.Parallel()
	const accepted = "at most 32 letters, digits, '.', '_' and '-'"
	set := func(u string) func(*Spec) { return func(s *Spec) { s.Tunnel.User = u } }
	var cases []validationCase
	for _, u := range []string{"dbtcloud", "ec2-user", "first.last", "_svc", "svc_1", "A1", "0user", "machine$", "a", strings.Repeat("u", 32)} {
		cases = append(cases, validationCase{name: u, mutate: set(u)})
	}
	cases = append(cases, validationCase{name: "empty", mutate: set(""), wantField: "ssh_tunnel.user",
		wantText: []string{"required", "the user on the bastion"}})
	for _, u := range []string{strings.Repeat("u", 33), "-user", ".user", "us er", "root@bastion", "user:pw", "us$er", "$", "user$$", "usér", "user\n", "u/x"} {
		cases = append(cases, validationCase{name: "invalid/" + u, mutate: set(u), wantField: "ssh_tunnel.user",
			wantText: []string{"is not accepted", accepted}})
	}
	runValidationCases(t, cases)
}

func TestValidateKeyType(t *testing.T) {
	t.Parallel()
	set := func(k string) func(*Spec) { return func(s *Spec) { s.Tunnel.KeyType = k } }
	const accepted = "use ed25519 (default) or rsa"
	runValidationCases(t, []validationCase{
		{name: "ed25519", mutate: set("ed25519")},
		{name: "rsa", mutate: set("rsa")},
		{name: "empty", mutate: set(""), wantField: "ssh_tunnel.key_type", wantText: []string{`""`, accepted}},
		{name: "dsa", mutate: set("dsa"), wantField: "ssh_tunnel.key_type", wantText: []string{`"dsa"`, accepted}},
		{name: "ecdsa", mutate: set("ecdsa"), wantField: "ssh_tunnel.key_type", wantText: []string{accepted}},
		{name: "ssh-rsa", mutate: set("ssh-rsa"), wantField: "ssh_tunnel.key_type", wantText: []string{accepted}},
		{name: "RSA", mutate: set("RSA"), wantField: "ssh_tunnel.key_type", wantText: []string{accepted}},
	})
}

func TestValidateKeepalive(t *testing.T) {
	t.Parallel()
	interval := func(d time.Duration) func(*Spec) {
		return func(s *Spec) { s.Tunnel.KeepaliveInterval = Duration(d) }
	}
	count := func(n int) func(*Spec) { return func(s *Spec) { s.Tunnel.KeepaliveCountMax = n } }
	const acceptedInterval = "accepted is 100ms to 1h0m0s"
	const acceptedCount = "accepted is 1 to 1000"
	runValidationCases(t, []validationCase{
		{name: "interval 100ms", mutate: interval(100 * time.Millisecond)},
		{name: "interval 30s", mutate: interval(30 * time.Second)},
		{name: "interval 1h", mutate: interval(time.Hour)},
		{name: "interval 0", mutate: interval(0), wantField: "ssh_tunnel.keepalive_interval", wantText: []string{"0s is out of range", acceptedInterval}},
		{name: "interval 99ms", mutate: interval(99 * time.Millisecond), wantField: "ssh_tunnel.keepalive_interval", wantText: []string{"99ms is out of range", acceptedInterval}},
		{name: "interval negative", mutate: interval(-time.Second), wantField: "ssh_tunnel.keepalive_interval", wantText: []string{"-1s is out of range", acceptedInterval}},
		{name: "interval 1h+1ns", mutate: interval(time.Hour + time.Nanosecond), wantField: "ssh_tunnel.keepalive_interval", wantText: []string{acceptedInterval}},
		{name: "interval 2h", mutate: interval(2 * time.Hour), wantField: "ssh_tunnel.keepalive_interval", wantText: []string{"2h0m0s is out of range", acceptedInterval}},
		{name: "count 1", mutate: count(1)},
		{name: "count 1000", mutate: count(1000)},
		{name: "count 0", mutate: count(0), wantField: "ssh_tunnel.keepalive_count_max", wantText: []string{"0 is out of range", acceptedCount}},
		{name: "count -1", mutate: count(-1), wantField: "ssh_tunnel.keepalive_count_max", wantText: []string{"-1 is out of range", acceptedCount}},
		{name: "count 1001", mutate: count(1001), wantField: "ssh_tunnel.keepalive_count_max", wantText: []string{"1001 is out of range", acceptedCount}},
	})
}

func TestValidateAllProblemsAtOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		spec   Spec
		fields []string
	}{
		{
			name:   "empty spec without defaults",
			spec:   Spec{},
			fields: []string{"name", "flavor", "host", "port", "database", "user", "sslmode", "threads"},
		},
		{
			name: "empty spec and tunnel without defaults",
			spec: Spec{Tunnel: &Tunnel{}},
			fields: []string{"name", "flavor", "host", "port", "database", "user", "sslmode", "threads",
				"ssh_tunnel.host", "ssh_tunnel.port", "ssh_tunnel.user", "ssh_tunnel.key_type",
				"ssh_tunnel.keepalive_interval", "ssh_tunnel.keepalive_count_max"},
		},
		{
			name: "every field wrong",
			spec: Spec{
				Name: "Bad Name", Flavor: Lakebase, Host: "db:5432", Port: 70000,
				Database: strings.Repeat("d", 64), User: "u\x00", Password: secret.New("p\x00"),
				SSLMode: SSLDisable, SSLRootCert: "garbage", Schema: "\xff", Threads: 1000,
				Tunnel: &Tunnel{Host: "[::1]", Port: -2, User: "-x", KeyType: "dsa",
					KeepaliveInterval: Duration(time.Millisecond), KeepaliveCountMax: 5000},
			},
			fields: []string{"name", "host", "port", "database", "user", "password", "sslmode", "ssl_root_cert", "schema", "threads",
				"ssh_tunnel.host", "ssh_tunnel.port", "ssh_tunnel.user", "ssh_tunnel.key_type",
				"ssh_tunnel.keepalive_interval", "ssh_tunnel.keepalive_count_max"},
		},
		{
			name:   "defaults leave only the required fields",
			spec:   func() Spec { s := Spec{Tunnel: &Tunnel{}}; s.ApplyDefaults(); return s }(),
			fields: []string{"name", "host", "database", "user", "ssh_tunnel.host", "ssh_tunnel.user"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.spec.Validate()
			var ve *fielderr.Error
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v (%T), want *fielderr.Error", err, err)
			}
			var got []string
			for _, p := range ve.Problems {
				got = append(got, p.Field)
				if p.Problem == "" {
					t.Errorf("field %s has an empty problem", p.Field)
				}
			}
			if len(ve.Problems) != len(tt.fields) {
				t.Errorf("got %d problems, want %d", len(ve.Problems), len(tt.fields))
			}
			if !slices.Equal(got, tt.fields) {
				t.Errorf("fields =\n %q\nwant\n %q", got, tt.fields)
			}
			if m := ve.Fields(); len(m) != len(tt.fields) {
				t.Errorf("Fields() has %d entries, want %d", len(m), len(tt.fields))
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "invalid connection (") {
				t.Errorf("Error() = %q", msg)
			}
			if lines := strings.Count(msg, "\n"); lines != len(tt.fields) {
				t.Errorf("Error() has %d problem lines, want %d:\n%s", lines, len(tt.fields), msg)
			}
		})
	}
}

func TestValidationErrorError(t *testing.T) {
	t.Parallel()
	one := &fielderr.Error{Subject: fielderr.Connection, Problems: []fielderr.Problem{{Field: "port", Problem: "0 is out of range: accepted is 1 to 65535"}}}
	if got, want := one.Error(), "invalid connection: port: 0 is out of range: accepted is 1 to 65535"; got != want {
		t.Errorf("one problem: Error() = %q, want %q", got, want)
	}
	many := &fielderr.Error{Subject: fielderr.Connection, Problems: []fielderr.Problem{
		{Field: "name", Problem: "required"},
		{Field: "ssh_tunnel.port", Problem: "out of range"},
		{Field: "threads", Problem: "too many"},
	}}
	want := "invalid connection (3 problems):\n  name: required\n  ssh_tunnel.port: out of range\n  threads: too many"
	if got := many.Error(); got != want {
		t.Errorf("many problems: Error() =\n%s\nwant\n%s", got, want)
	}

	if got, want := many.Fields(), map[string]string{"name": "required", "ssh_tunnel.port": "out of range", "threads": "too many"}; !maps.Equal(got, want) {
		t.Errorf("Fields() = %v, want %v", got, want)
	}
	if got := one.Fields(); !maps.Equal(got, map[string]string{"port": "0 is out of range: accepted is 1 to 65535"}) {
		t.Errorf("Fields() = %v", got)
	}

	// Problems marshal with snake_case keys for the API.
	b, err := json.Marshal(many.Problems[:1])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `[{"field":"name","problem":"required"}]`; got != want {
		t.Errorf("JSON = %s, want %s", got, want)
	}

	// A real one from Validate.
	s := validSpec()
	s.Port = 0
	if got, want := s.Validate().Error(), "invalid connection: port: 0 is out of range: accepted is 1 to 65535"; got != want {
		t.Errorf("Validate().Error() = %q, want %q", got, want)
	}
}

func TestValidateNameFunc(t *testing.T) {
	t.Parallel()
	for name, ok := range map[string]bool{"wh": true, "a-b_c": true, strings.Repeat("x", 63): true, "": false, "A": false, "-a": false, strings.Repeat("x", 64): false} {
		if err := ValidateName(name); (err == nil) != ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestValidateKnownHost(t *testing.T) {
	t.Parallel()
	// A fixed ed25519 public key (the key of RFC 8032's first test vector).
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
	set := func(k string) func(*Spec) { return func(s *Spec) { s.Tunnel.KnownHost = k } }
	const accepted = "accepted is the bastion's public host key"
	runValidationCases(t, []validationCase{
		{name: "none", mutate: set("")},
		{name: "key", mutate: set(key + " root@bastion")},
		{name: "known_hosts line", mutate: set("bastion.example.com " + key)},
		{name: "known_hosts line with port", mutate: func(s *Spec) { s.Tunnel.Port = 2222; s.Tunnel.KnownHost = "[bastion.example.com]:2222 " + key }},
		{name: "other host", mutate: set("db.example.com " + key), wantField: "ssh_tunnel.known_host",
			wantText: []string{"for db.example.com, not for this bastion", accepted}},
		{name: "fingerprint", mutate: set("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"), wantField: "ssh_tunnel.known_host",
			wantText: []string{"fingerprint, which cannot be pinned", "--host-key-policy approve", accepted}},
		{name: "garbage", mutate: set("not a key"), wantField: "ssh_tunnel.known_host", wantText: []string{accepted}},
	})
}
