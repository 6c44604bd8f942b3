// Package connection defines a saved connection to a PostgreSQL-compatible
// warehouse (PostgreSQL, AlloyDB, Databricks Lakebase), reached directly or
// through an SSH bastion: its fields, defaults, validation, and the pgx
// configuration it turns into. It does no I/O.
package connection

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pgrelay/pgrelay/internal/secret"
)

// Flavor is the kind of PostgreSQL-compatible server.
type Flavor string

// Flavors.
const (
	Postgres Flavor = "postgres"
	AlloyDB  Flavor = "alloydb"
	Lakebase Flavor = "lakebase"
)

// Flavors returns every flavor in display order.
func Flavors() []Flavor { return []Flavor{Postgres, AlloyDB, Lakebase} }

// Label is the product name of the flavor.
func (f Flavor) Label() string {
	switch f {
	case Postgres:
		return "PostgreSQL"
	case AlloyDB:
		return "AlloyDB"
	case Lakebase:
		return "Databricks Lakebase"
	}
	return string(f)
}

// DefaultSSLMode is the sslmode a new connection of this flavor gets:
// AlloyDB and Lakebase only accept encrypted connections, and Lakebase's
// server is verified.
func (f Flavor) DefaultSSLMode() SSLMode {
	switch f {
	case Lakebase:
		// Its certificates are from public CAs, and a token login (sent
		// as a clear-text password) needs the server verified.
		return SSLVerifyFull
	case AlloyDB:
		return SSLRequire
	}
	return SSLPrefer
}

// SSLMode is libpq's sslmode.
type SSLMode string

// SSL modes, weakest first.
const (
	SSLDisable    SSLMode = "disable"
	SSLAllow      SSLMode = "allow"
	SSLPrefer     SSLMode = "prefer"
	SSLRequire    SSLMode = "require"
	SSLVerifyCA   SSLMode = "verify-ca"
	SSLVerifyFull SSLMode = "verify-full"
)

// SSLModes returns every sslmode, weakest first.
func SSLModes() []SSLMode {
	return []SSLMode{SSLDisable, SSLAllow, SSLPrefer, SSLRequire, SSLVerifyCA, SSLVerifyFull}
}

// Verifies reports whether the mode checks the server certificate.
func (m SSLMode) Verifies() bool { return m == SSLVerifyCA || m == SSLVerifyFull }

// Encrypts reports whether the mode refuses unencrypted connections.
func (m SSLMode) Encrypts() bool { return m == SSLRequire || m.Verifies() }

// Defaults.
const (
	DefaultPort              = 5432
	DefaultSSHPort           = 22
	DefaultThreads           = 4
	DefaultKeepaliveInterval = 30 * time.Second
	DefaultKeepaliveCountMax = 10
	DefaultKeyType           = "ed25519"
)

// Spec is a connection as the user describes it. The password is a
// secret.Value and is never serialised by encoding/json.
type Spec struct {
	Name     string `json:"name"`
	Flavor   Flavor `json:"flavor"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Database string `json:"database"`
	User     string `json:"user"`
	// Password is the database password. Never stored in plain text.
	Password secret.Value `json:"-"`
	SSLMode  SSLMode      `json:"sslmode"`
	// SSLRootCert is the PEM text of the CA certificate(s) used by
	// verify-ca and verify-full; empty means the system roots.
	SSLRootCert string `json:"ssl_root_cert,omitempty"`
	// Schema is the default schema (dbt's target schema).
	Schema string `json:"schema,omitempty"`
	// Role, when set, is the role every session acts as (SET ROLE at
	// login, libpq's `-c role=...`): the user logs in, the role owns what
	// it creates. pgrelay sends it as a startup parameter, quoted as a
	// name, never as SQL (dbt's own `role` runs `set role` unquoted).
	Role string `json:"role,omitempty"`
	// Threads is dbt's thread count.
	Threads int `json:"threads"`
	// RequireAuth is libpq 16's require_auth: the authentication methods
	// pgrelay accepts from the server, e.g. "scram-sha-256". Empty means
	// the default: any method except a clear-text password over a hop
	// whose server certificate is not verified (EffectiveRequireAuth).
	RequireAuth string `json:"require_auth,omitempty"`
	// HealthCheckInterval is how often `pgrelay serve` tests the
	// connection on its own (and records the outcome in its health); 0,
	// the default, never.
	HealthCheckInterval Duration `json:"health_check_interval,omitempty"`
	// Tunnel is the optional SSH tunnel.
	Tunnel *Tunnel `json:"ssh_tunnel,omitempty"`
	// Auth says where the password comes from; nil means the stored
	// password (see auth.go).
	Auth *Auth `json:"auth,omitempty"`
	// Pooler is the connection pooler in front of the database: none
	// (empty), transaction or session (see pooler.go).
	Pooler Pooler `json:"pooler,omitempty"`
}

// Tunnel describes the SSH bastion a connection goes through.
type Tunnel struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	User string `json:"user"`
	// KeyType is the algorithm of the generated key pair: ed25519 or rsa.
	KeyType string `json:"key_type"`
	// KeepaliveInterval is how often a keepalive is sent to the bastion.
	KeepaliveInterval Duration `json:"keepalive_interval"`
	// KeepaliveCountMax is how many intervals may pass without a reply
	// before the tunnel counts as dropped.
	KeepaliveCountMax int `json:"keepalive_count_max"`
	// KnownHost, given on create or update, is the bastion's host key to
	// pin at once, so that it is never trusted on first use: a public key
	// ("ssh-ed25519 AAAA...") or known_hosts lines, one key per line (see
	// sshkey.ParseKnownHosts). It is input only: the pins are stored apart
	// from the spec, and empty keeps them.
	KnownHost string `json:"known_host,omitempty"`
	// ProxyCommand, when set, is a program and its arguments (run without
	// a shell) whose standard input and output carry the SSH connection to
	// the first hop instead of a TCP connection, like OpenSSH's
	// ProxyCommand (AWS SSM, Cloudflare Access, socat). See hops.go.
	ProxyCommand []string `json:"proxy_command,omitempty"`
	// Auth is how pgrelay logs in to every hop: with the connection's key
	// pair (SSHAuthKey; "" is the same) or with a short-lived certificate of
	// that key signed by pgrelay's SSH CA (SSHAuthCertificate).
	Auth SSHAuth `json:"auth,omitempty"`
	// Next are the hops after the first (the one Host, Port and User
	// name), in order: each is dialled through the one before it, and the
	// last one forwards to the database. See hops.go.
	Next []Hop `json:"next_hops,omitempty"`
	// HostAuthorities are known_hosts lines with the markers
	// @cert-authority (a host CA trusted for the hosts its pattern
	// matches, instead of pinning their keys) and @revoked (a key never
	// accepted), for every hop (see sshkey.ParseHostAuthorities).
	HostAuthorities []string `json:"host_authorities,omitempty"`
}

// DeadAfter is how long the tunnel may stay silent before it is dropped.
func (t *Tunnel) DeadAfter() time.Duration {
	return time.Duration(t.KeepaliveInterval) * time.Duration(t.KeepaliveCountMax)
}

// Duration is a time.Duration that reads and writes JSON as "30s".
type Duration time.Duration

// String formats the duration like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string such as "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// MaxSeconds is the most seconds a Duration holds (about 292 years).
const MaxSeconds = math.MaxInt64 / int64(time.Second)

// ErrSecondsRange is FromSeconds' error.
var ErrSecondsRange = fmt.Errorf("out of range: accepted is a number of seconds up to %d", MaxSeconds)

// FromSeconds converts a number of seconds. NaN, infinities and more
// than MaxSeconds (either sign) are refused with ErrSecondsRange: the
// conversion would give a nonsense duration (-2562047h47m16.854775808s).
func FromSeconds(secs float64) (Duration, error) {
	ns := secs * float64(time.Second)
	if !(math.Abs(ns) < math.MaxInt64) { // false for NaN; MaxInt64 rounds up to 2^63
		return 0, ErrSecondsRange
	}
	return Duration(ns), nil
}

// UnmarshalJSON reads "30s"-style strings, or a number of seconds; null
// leaves the duration unchanged.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		// Like encoding/json: null leaves the value unchanged.
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			// A number too large for a float64 (1e400) is out of range.
			if f, perr := strconv.ParseFloat(string(b), 64); !errors.Is(perr, strconv.ErrRange) || !math.IsInf(f, 0) {
				return fmt.Errorf("duration must be a string such as \"30s\" or a number of seconds")
			}
			secs = math.Inf(1)
		}
		v, err := FromSeconds(secs)
		if err != nil {
			return fmt.Errorf("duration %s: %w", b, err)
		}
		*d = v
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: accepted is a number with a unit, such as \"30s\" or \"1m\"", s)
	}
	*d = Duration(v)
	return nil
}

// ApplyDefaults fills unset fields with their defaults. The sslmode default
// depends on the flavor, so set the flavor first.
func (s *Spec) ApplyDefaults() {
	if s.Flavor == "" {
		s.Flavor = Postgres
	}
	if s.Port == 0 {
		s.Port = DefaultPort
	}
	if s.SSLMode == "" {
		s.SSLMode = s.Flavor.DefaultSSLMode()
	}
	if s.Threads == 0 {
		s.Threads = DefaultThreads
	}
	s.Auth.ApplyDefaults()
	if t := s.Tunnel; t != nil {
		if t.Port == 0 {
			t.Port = DefaultSSHPort
		}
		if t.KeyType == "" {
			t.KeyType = DefaultKeyType
		}
		if t.KeepaliveInterval == 0 {
			t.KeepaliveInterval = Duration(DefaultKeepaliveInterval)
		}
		if t.KeepaliveCountMax == 0 {
			t.KeepaliveCountMax = DefaultKeepaliveCountMax
		}
		for i := range t.Next {
			if t.Next[i].Port == 0 {
				t.Next[i].Port = DefaultSSHPort
			}
		}
	}
}

// Clone returns a deep copy of the spec.
func (s Spec) Clone() Spec {
	c := s
	if s.Tunnel != nil {
		t := *s.Tunnel
		t.ProxyCommand = slices.Clone(t.ProxyCommand)
		t.Next = slices.Clone(t.Next)
		t.HostAuthorities = slices.Clone(t.HostAuthorities)
		c.Tunnel = &t
	}
	c.Auth = s.Auth.Clone()
	return c
}

// Duration returns d as a time.Duration.
func (d Duration) Duration() time.Duration { return time.Duration(d) }

// MarshalText writes the duration as "30s" (YAML and other text formats).
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalYAML reads "30s"-style durations, naming the line of a bad one
// (a YAML decoder gives a text unmarshaler's error without it).
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if err := d.UnmarshalText([]byte(n.Value)); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

// UnmarshalText reads "30s"-style durations (YAML and other text formats).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: accepted is a number with a unit, such as \"30s\", \"10m\" or \"2h\"", b)
	}
	*d = Duration(v)
	return nil
}
