package connection

import (
	"errors"
	"net"
	"reflect"
	"testing"

	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// FuzzValidate checks that Validate never panics, reports each field at most
// once, does not change the spec, and that every host it accepts survives
// net.JoinHostPort and net.SplitHostPort unchanged and builds a pgx config.
// Seeds live in testdata/fuzz/FuzzValidate; run with
// go test ./internal/connection -fuzz FuzzValidate.
func FuzzValidate(f *testing.F) {
	f.Add("wh", "postgres", "db.internal", "analytics", "dbt", "pw", "prefer", "bastion.example.com", "dbtcloud", "ed25519")
	f.Add("wh", "lakebase", "2001:db8::5", "db", "u", "", "require", "::1", "ec2-user", "rsa")
	f.Add("-x", "", "[::1]", "", "", "p\x00", "", "db:22", "-u", "")
	f.Fuzz(func(t *testing.T, name, flavor, host, database, user, password, sslmode, sshHost, sshUser, keyType string) {
		s := Spec{
			Name: name, Flavor: Flavor(flavor), Host: host, Database: database, User: user,
			Password: secret.New(password), SSLMode: SSLMode(sslmode),
			Tunnel: &Tunnel{Host: sshHost, User: sshUser, KeyType: keyType},
		}
		s.ApplyDefaults()
		before := s.Clone()
		err := s.Validate()
		if !reflect.DeepEqual(s, before) {
			t.Fatalf("Validate changed the spec: %+v -> %+v", before, s)
		}
		if err != nil {
			var ve *fielderr.Error
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("Validate = %v (%T), want *fielderr.Error with problems", err, err)
			}
			seen := map[string]bool{}
			for _, p := range ve.Problems {
				if p.Field == "" || p.Problem == "" {
					t.Fatalf("empty field or problem: %+v", p)
				}
				if seen[p.Field] {
					t.Fatalf("field %s reported twice: %v", p.Field, err)
				}
				seen[p.Field] = true
			}
			if len(ve.Fields()) != len(ve.Problems) {
				t.Fatalf("Fields() has %d entries for %d problems", len(ve.Fields()), len(ve.Problems))
			}
			if err.Error() == "" {
				t.Fatal("empty Error()")
			}
		}

		for _, h := range []string{host, sshHost} {
			if ValidateHost(h) != nil {
				continue
			}
			joined := net.JoinHostPort(h, "5432")
			gotHost, gotPort, serr := net.SplitHostPort(joined)
			if serr != nil {
				t.Fatalf("accepted host %q: SplitHostPort(%q): %v", h, joined, serr)
			}
			if gotHost != h || gotPort != "5432" {
				t.Fatalf("accepted host %q: %q splits into %q, %q", h, joined, gotHost, gotPort)
			}
		}

		if err != nil {
			return
		}
		cfg, perr := s.PgxConfig()
		if perr != nil {
			if s.SSLMode.Verifies() {
				return // the system certificate pool may be unavailable
			}
			t.Fatalf("valid spec: PgxConfig: %v", perr)
		}
		if cfg.Host != s.Host || int(cfg.Port) != s.Port || cfg.Database != s.Database ||
			cfg.User != s.User || cfg.Password != password {
			t.Fatalf("PgxConfig changed the target: host=%q database=%q user=%q; spec host=%q database=%q user=%q",
				cfg.Host, cfg.Database, cfg.User, s.Host, s.Database, s.User)
		}
	})
}
