package connection

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// FuzzValidateAuth checks that validating any auth never panics, reports
// each field at most once, does not change the spec, and never quotes a
// secret. Run with go test ./internal/connection -fuzz FuzzValidateAuth.
func FuzzValidateAuth(f *testing.F) {
	f.Add("command", "/bin/x", "a", "", "", "", "", "", "", "", "prefer", "", int64(0))
	f.Add("lakebase", "", "", "https://dbc.cloud.databricks.com", "id", "s3cr3t", "inst", "", "", "", "require", "u", int64(time.Hour))
	f.Add("alloydb-iam", "", "", "", "", "", "", "", `{"type":"service_account"}`, "https://x", "disable", "u@p.iam", int64(0))
	f.Add("lakebase", "x", "\x00", "http://u:p@h/x?y", ":", "a\nb", "bad inst", "projects/a", "{", "s c", "allow", "", int64(-1))
	f.Fuzz(func(t *testing.T, kind, program, arg, ws, clientID, clientSecret, instance, endpoint, key, scope, sslmode, user string, lifetime int64) {
		s := Spec{Name: "wh", Host: "db.internal", Database: "db", User: user, SSLMode: SSLMode(sslmode), Password: secret.New(arg),
			Auth: &Auth{Kind: AuthKind(kind), Program: program, Args: []string{arg}, WorkspaceURL: ws, ClientID: clientID,
				ClientSecret: secret.New(clientSecret), Instance: instance, Endpoint: endpoint,
				ServiceAccountKey: secret.New(key), Scope: scope, Lifetime: Duration(lifetime)}}
		s.ApplyDefaults()
		before := s.Clone()
		err := s.Validate()
		if !reflect.DeepEqual(s, before) {
			t.Fatalf("Validate changed the spec")
		}
		if err == nil {
			return
		}
		var ve *fielderr.Error
		if !errors.As(err, &ve) || len(ve.Problems) == 0 {
			t.Fatalf("Validate = %v, want *fielderr.Error", err)
		}
		seen := map[string]bool{}
		for _, p := range ve.Problems {
			if seen[p.Field] {
				t.Fatalf("field %s reported twice: %v", p.Field, err)
			}
			seen[p.Field] = true
		}
		if len(clientSecret) >= 8 && len(clientSecret) < 100 {
			for _, p := range ve.Problems {
				if strings.Contains(p.Problem, clientSecret) {
					t.Fatalf("problem quotes the client secret: %s", p.Problem)
				}
			}
		}
	})
}
