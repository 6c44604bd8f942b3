package connection

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/secret"
)

// passwordCanary is a password that must never appear in output.
const passwordCanary = "pw-canary-5b1e0d77-do-not-print"

// validSpec returns a spec that passes Validate, with a tunnel.
func validSpec() Spec {
	return Spec{
		Name:     "wh",
		Flavor:   Postgres,
		Host:     "db.internal",
		Port:     5432,
		Database: "analytics",
		User:     "dbt",
		Password: secret.New(passwordCanary),
		SSLMode:  SSLPrefer,
		Schema:   "dbt_prod",
		Threads:  4,
		Tunnel: &Tunnel{
			Host:              "bastion.example.com",
			Port:              22,
			User:              "dbtcloud",
			KeyType:           "ed25519",
			KeepaliveInterval: Duration(30 * time.Second),
			KeepaliveCountMax: 10,
		},
	}
}

func TestFlavors(t *testing.T) {
	t.Parallel()
	if got, want := Flavors(), []Flavor{Postgres, AlloyDB, Lakebase}; !slices.Equal(got, want) {
		t.Errorf("Flavors() = %q, want %q", got, want)
	}
	tests := []struct {
		f       Flavor
		label   string
		sslmode SSLMode
	}{
		{Postgres, "PostgreSQL", SSLPrefer},
		{AlloyDB, "AlloyDB", SSLRequire},
		{Lakebase, "Databricks Lakebase", SSLVerifyFull},
		{"", "", SSLPrefer},
		{"mysql", "mysql", SSLPrefer},
	}
	for _, tt := range tests {
		if got := tt.f.Label(); got != tt.label {
			t.Errorf("%q.Label() = %q, want %q", tt.f, got, tt.label)
		}
		if got := tt.f.DefaultSSLMode(); got != tt.sslmode {
			t.Errorf("%q.DefaultSSLMode() = %q, want %q", tt.f, got, tt.sslmode)
		}
	}
}

func TestSSLModes(t *testing.T) {
	t.Parallel()
	want := []SSLMode{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
	if got := SSLModes(); !slices.Equal(got, want) {
		t.Errorf("SSLModes() = %q, want %q", got, want)
	}
	tests := []struct {
		m                  SSLMode
		verifies, encrypts bool
	}{
		{SSLDisable, false, false},
		{SSLAllow, false, false},
		{SSLPrefer, false, false},
		{SSLRequire, false, true},
		{SSLVerifyCA, true, true},
		{SSLVerifyFull, true, true},
		{"", false, false},
		{"VERIFY-FULL", false, false},
	}
	for _, tt := range tests {
		if got := tt.m.Verifies(); got != tt.verifies {
			t.Errorf("%q.Verifies() = %v, want %v", tt.m, got, tt.verifies)
		}
		if got := tt.m.Encrypts(); got != tt.encrypts {
			t.Errorf("%q.Encrypts() = %v, want %v", tt.m, got, tt.encrypts)
		}
	}
}

func TestApplyDefaults(t *testing.T) {
	t.Parallel()
	defaultTunnel := Tunnel{Port: 22, KeyType: "ed25519", KeepaliveInterval: Duration(30 * time.Second), KeepaliveCountMax: 10}
	tests := []struct {
		name string
		in   Spec
		want Spec
	}{
		{
			name: "empty",
			in:   Spec{},
			want: Spec{Flavor: Postgres, Port: 5432, SSLMode: SSLPrefer, Threads: 4},
		},
		{
			name: "postgres",
			in:   Spec{Flavor: Postgres},
			want: Spec{Flavor: Postgres, Port: 5432, SSLMode: SSLPrefer, Threads: 4},
		},
		{
			name: "alloydb requires tls",
			in:   Spec{Flavor: AlloyDB},
			want: Spec{Flavor: AlloyDB, Port: 5432, SSLMode: SSLRequire, Threads: 4},
		},
		{
			name: "lakebase verifies its server",
			in:   Spec{Flavor: Lakebase},
			want: Spec{Flavor: Lakebase, Port: 5432, SSLMode: SSLVerifyFull, Threads: 4},
		},
		{
			name: "explicit values kept",
			in:   Spec{Name: "wh", Flavor: AlloyDB, Host: "h", Port: 6432, Database: "d", User: "u", SSLMode: SSLDisable, Schema: "s", Threads: 16},
			want: Spec{Name: "wh", Flavor: AlloyDB, Host: "h", Port: 6432, Database: "d", User: "u", SSLMode: SSLDisable, Schema: "s", Threads: 16},
		},
		{
			name: "explicit sslmode on lakebase kept",
			in:   Spec{Flavor: Lakebase, SSLMode: SSLVerifyFull},
			want: Spec{Flavor: Lakebase, Port: 5432, SSLMode: SSLVerifyFull, Threads: 4},
		},
		{
			name: "invalid values are not defaults' business",
			in:   Spec{Flavor: "mysql", Port: -1, SSLMode: "bogus", Threads: -3},
			want: Spec{Flavor: "mysql", Port: -1, SSLMode: "bogus", Threads: -3},
		},
		{
			name: "empty tunnel",
			in:   Spec{Tunnel: &Tunnel{}},
			want: Spec{Flavor: Postgres, Port: 5432, SSLMode: SSLPrefer, Threads: 4, Tunnel: &defaultTunnel},
		},
		{
			name: "tunnel explicit values kept",
			in: Spec{Tunnel: &Tunnel{Host: "b", Port: 2222, User: "u", KeyType: "rsa",
				KeepaliveInterval: Duration(5 * time.Second), KeepaliveCountMax: 3}},
			want: Spec{Flavor: Postgres, Port: 5432, SSLMode: SSLPrefer, Threads: 4, Tunnel: &Tunnel{Host: "b", Port: 2222, User: "u", KeyType: "rsa",
				KeepaliveInterval: Duration(5 * time.Second), KeepaliveCountMax: 3}},
		},
		{
			name: "tunnel partly set",
			in:   Spec{Tunnel: &Tunnel{Port: 2200, KeepaliveCountMax: 2}},
			want: Spec{Flavor: Postgres, Port: 5432, SSLMode: SSLPrefer, Threads: 4, Tunnel: &Tunnel{Port: 2200, KeyType: "ed25519",
				KeepaliveInterval: Duration(30 * time.Second), KeepaliveCountMax: 2}},
		},
		{
			name: "password untouched",
			in:   Spec{Password: secret.New("x")},
			want: Spec{Flavor: Postgres, Port: 5432, SSLMode: SSLPrefer, Threads: 4, Password: secret.New("x")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.in.Clone()
			got.ApplyDefaults()
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ApplyDefaults:\n got %+v tunnel %+v\nwant %+v tunnel %+v", got, got.Tunnel, tt.want, tt.want.Tunnel)
			}
			// Applying twice changes nothing.
			again := got.Clone()
			again.ApplyDefaults()
			if !reflect.DeepEqual(again, got) {
				t.Errorf("second ApplyDefaults changed %+v into %+v", got, again)
			}
		})
	}
}

func TestApplyDefaultsThenValidate(t *testing.T) {
	t.Parallel()
	// A spec with only the required fields is valid once defaults are set.
	for _, f := range Flavors() {
		s := Spec{Name: "wh", Flavor: f, Host: "db", Database: "d", User: "u",
			Tunnel: &Tunnel{Host: "bastion", User: "dbtcloud"}}
		s.ApplyDefaults()
		if err := s.Validate(); err != nil {
			t.Errorf("%s: Validate after ApplyDefaults: %v", f, err)
		}
	}
}

func TestDeadAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		interval time.Duration
		count    int
		want     time.Duration
	}{
		{30 * time.Second, 10, 5 * time.Minute},
		{time.Second, 1, time.Second},
		{100 * time.Millisecond, 3, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		tu := Tunnel{KeepaliveInterval: Duration(tt.interval), KeepaliveCountMax: tt.count}
		if got := tu.DeadAfter(); got != tt.want {
			t.Errorf("DeadAfter(%s × %d) = %s, want %s", tt.interval, tt.count, got, tt.want)
		}
	}
}

func TestDurationMarshalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		d    time.Duration
		want string
	}{
		{30 * time.Second, `"30s"`},
		{90 * time.Second, `"1m30s"`},
		{100 * time.Millisecond, `"100ms"`},
		{time.Hour, `"1h0m0s"`},
		{0, `"0s"`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(Duration(tt.d))
		if err != nil {
			t.Fatalf("Marshal(%s): %v", tt.d, err)
		}
		if string(b) != tt.want {
			t.Errorf("Marshal(%s) = %s, want %s", tt.d, b, tt.want)
		}
		if got := Duration(tt.d).String(); got != tt.d.String() {
			t.Errorf("String() = %q, want %q", got, tt.d.String())
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("Unmarshal(%s): %v", b, err)
		}
		if time.Duration(back) != tt.d {
			t.Errorf("round trip of %s gave %s", tt.d, time.Duration(back))
		}
	}
}

func TestDurationUnmarshalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    time.Duration
		wantErr []string
	}{
		{in: `"30s"`, want: 30 * time.Second},
		{in: `"1m"`, want: time.Minute},
		{in: `"1m30s"`, want: 90 * time.Second},
		{in: `"250ms"`, want: 250 * time.Millisecond},
		{in: `"1.5s"`, want: 1500 * time.Millisecond},
		{in: `"1h"`, want: time.Hour},
		{in: `"-5s"`, want: -5 * time.Second}, // parsed; Validate rejects it
		{in: `30`, want: 30 * time.Second},
		{in: `0.5`, want: 500 * time.Millisecond},
		{in: `0`, want: 0},
		{in: `1e1`, want: 10 * time.Second},
		{in: `"30"`, wantErr: []string{`"30"`, "accepted", `"30s"`, `"1m"`}},
		{in: `"abc"`, wantErr: []string{`"abc"`, "accepted", `"30s"`}},
		{in: `""`, wantErr: []string{"accepted", `"30s"`}},
		{in: `"30 s"`, wantErr: []string{"accepted", `"30s"`}},
		{in: `"30S"`, wantErr: []string{"accepted", `"30s"`}},
		{in: `true`, wantErr: []string{`"30s"`, "number of seconds"}},
		{in: `{}`, wantErr: []string{`"30s"`, "number of seconds"}},
		{in: `[30]`, wantErr: []string{`"30s"`, "number of seconds"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			d := Duration(7 * time.Second)
			err := json.Unmarshal([]byte(tt.in), &d)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Unmarshal(%s) = %s, want error", tt.in, time.Duration(d))
				}
				for _, want := range tt.wantErr {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("Unmarshal(%s) error %q lacks %q", tt.in, err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Unmarshal(%s): %v", tt.in, err)
			}
			if time.Duration(d) != tt.want {
				t.Errorf("Unmarshal(%s) = %s, want %s", tt.in, time.Duration(d), tt.want)
			}
		})
	}
}

func TestDurationUnmarshalNull(t *testing.T) {
	t.Parallel()
	// null leaves the value as it was, like encoding/json does for other types.
	tu := Tunnel{KeepaliveInterval: Duration(5 * time.Second)}
	if err := json.Unmarshal([]byte(`{"keepalive_interval":null}`), &tu); err != nil {
		t.Fatalf("Unmarshal null: %v", err)
	}
	if tu.KeepaliveInterval != Duration(5*time.Second) {
		t.Errorf("null changed the interval to %s", tu.KeepaliveInterval)
	}
}

func TestTunnelJSON(t *testing.T) {
	t.Parallel()
	in := `{"host":"bastion","port":2222,"user":"u","key_type":"rsa","keepalive_interval":15,"keepalive_count_max":4}`
	var tu Tunnel
	if err := json.Unmarshal([]byte(in), &tu); err != nil {
		t.Fatal(err)
	}
	want := Tunnel{Host: "bastion", Port: 2222, User: "u", KeyType: "rsa", KeepaliveInterval: Duration(15 * time.Second), KeepaliveCountMax: 4}
	if !reflect.DeepEqual(tu, want) {
		t.Errorf("Unmarshal = %+v, want %+v", tu, want)
	}
	b, err := json.Marshal(tu)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON := `{"host":"bastion","port":2222,"user":"u","key_type":"rsa","keepalive_interval":"15s","keepalive_count_max":4}`
	if string(b) != wantJSON {
		t.Errorf("Marshal = %s, want %s", b, wantJSON)
	}
}

func TestSpecJSONNeverHasPassword(t *testing.T) {
	t.Parallel()
	s := validSpec()
	s.SSLMode = SSLVerifyFull
	s.SSLRootCert = "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"
	for name, v := range map[string]any{"value": s, "pointer": &s, "in a slice": []Spec{s}, "in a map": map[string]Spec{"k": s}} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if bytes.Contains(b, []byte(passwordCanary)) {
			t.Errorf("%s: JSON contains the password: %s", name, b)
		}
		if bytes.Contains(b, []byte(`"password"`)) {
			t.Errorf("%s: JSON has a password field: %s", name, b)
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "flavor", "host", "port", "database", "user", "sslmode", "ssl_root_cert", "schema", "threads", "ssh_tunnel"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b)
		}
	}

	// Decoding ignores a password in the input, and the rest round-trips.
	withPW := strings.Replace(string(b), `{"name"`, `{"password":"from-json","name"`, 1)
	var back Spec
	if err := json.Unmarshal([]byte(withPW), &back); err != nil {
		t.Fatal(err)
	}
	if !back.Password.IsZero() {
		t.Error("JSON decoding set the password")
	}
	back.Password = s.Password
	if !reflect.DeepEqual(back, s) {
		t.Errorf("round trip:\n got %+v %+v\nwant %+v %+v", back, back.Tunnel, s, s.Tunnel)
	}

	// Optional fields are left out when empty.
	s2 := validSpec()
	s2.Schema, s2.Tunnel = "", nil
	b, err = json.Marshal(s2)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ssl_root_cert", "schema", "ssh_tunnel"} {
		if bytes.Contains(b, []byte(`"`+k+`"`)) {
			t.Errorf("JSON of a spec without %s has it: %s", k, b)
		}
	}
}

func TestSpecPrintNeverHasPassword(t *testing.T) {
	t.Parallel()
	s := validSpec()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		for name, v := range map[string]any{"value": s, "pointer": &s} {
			got := fmt.Sprintf(verb, v)
			if strings.Contains(got, passwordCanary) {
				t.Errorf("Sprintf(%q, %s) reveals the password: %s", verb, name, got)
			}
			if name == "value" && !strings.Contains(got, secret.Redacted) {
				t.Errorf("Sprintf(%q, %s) = %s, want the password shown as %s", verb, name, got, secret.Redacted)
			}
		}
	}
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var buf bytes.Buffer
		slog.New(h(&buf)).Info("saved", "spec", s, "password", s.Password)
		if strings.Contains(buf.String(), passwordCanary) {
			t.Errorf("slog %s handler reveals the password: %s", name, buf.String())
		}
	}
}

func TestClone(t *testing.T) {
	t.Parallel()
	orig := validSpec()
	c := orig.Clone()
	if !reflect.DeepEqual(c, orig) {
		t.Fatalf("Clone = %+v, want %+v", c, orig)
	}
	if c.Tunnel == orig.Tunnel {
		t.Fatal("Clone shares the Tunnel pointer")
	}
	c.Tunnel.Host = "other"
	c.Tunnel.Port = 2222
	c.Tunnel.KeepaliveInterval = Duration(time.Second)
	c.Host = "changed"
	if orig.Tunnel.Host != "bastion.example.com" || orig.Tunnel.Port != 22 ||
		orig.Tunnel.KeepaliveInterval != Duration(30*time.Second) || orig.Host != "db.internal" {
		t.Errorf("changing the clone changed the original: %+v %+v", orig, orig.Tunnel)
	}

	noTunnel := validSpec()
	noTunnel.Tunnel = nil
	if c := noTunnel.Clone(); c.Tunnel != nil {
		t.Errorf("Clone of a spec without tunnel has tunnel %+v", c.Tunnel)
	}
}
