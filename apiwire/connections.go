package apiwire

import (
	"encoding/json"
	"time"
)

// Secret is a write-only value of a request (a password): it prints as
// [redacted] but is sent as its text.
type Secret struct{ s string }

// NewSecret wraps s.
func NewSecret(s string) *Secret { return &Secret{s: s} }

// Reveal returns the text.
func (p Secret) Reveal() string { return p.s }

// String prints [redacted].
func (p Secret) String() string { return "[redacted]" }

// GoString prints [redacted].
func (p Secret) GoString() string { return "[redacted]" }

// MarshalJSON writes the text: a request must carry it.
func (p Secret) MarshalJSON() ([]byte, error) { return json.Marshal(p.s) }

// UnmarshalJSON reads a JSON string.
func (p *Secret) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &p.s) }

// ConnectionInput is the body of POST /connections, PUT
// /connections/{name} and (with BasedOn) POST /connections/test.
type ConnectionInput struct {
	// Name is required on create; on update it may be left out, and if
	// given must be the connection's name.
	Name        string `json:"name,omitempty"`
	Flavor      string `json:"flavor,omitempty"`
	Host        string `json:"host"`
	Port        int    `json:"port,omitempty"`
	Database    string `json:"database"`
	User        string `json:"user"`
	SSLMode     string `json:"sslmode,omitempty"`
	SSLRootCert string `json:"ssl_root_cert,omitempty"`
	Schema      string `json:"schema,omitempty"`
	// Role is the role sessions act as (set at login); empty: the user.
	Role    string `json:"role,omitempty"`
	Threads int    `json:"threads,omitempty"`
	// RequireAuth is libpq 16's require_auth list; empty is the default.
	RequireAuth string `json:"require_auth,omitempty"`
	// Auth says where the password comes from (absent: the stored one).
	Auth *AuthInput `json:"auth,omitempty"`
	// Pooler is none (default), transaction or session.
	Pooler string `json:"pooler,omitempty"`
	// HealthCheckInterval is how often the server tests the connection on
	// its own (absent or 0: never).
	HealthCheckInterval Duration `json:"health_check_interval,omitempty"`
	// Password is write-only: absent on update keeps the stored password,
	// present sets it ("" removes it).
	Password  *Secret      `json:"password,omitempty"`
	SSHTunnel *TunnelInput `json:"ssh_tunnel,omitempty"`
	// SSHHops is the chain of SSH hops, in the order they are dialled:
	// the first is ssh_tunnel's host (which may be left out, or must be
	// the same), each further one is reached through the one before.
	SSHHops []HopInput `json:"ssh_hops,omitempty"`
}

// TunnelInput is the SSH tunnel part of a ConnectionInput.
type TunnelInput struct {
	Host string `json:"host"`
	Port int    `json:"port,omitempty"`
	User string `json:"user"`
	// KeyType is ed25519 (default) or rsa.
	KeyType           string   `json:"key_type,omitempty"`
	KeepaliveInterval Duration `json:"keepalive_interval,omitempty"`
	KeepaliveCountMax int      `json:"keepalive_count_max,omitempty"`
	// KnownHost is the bastion's host key to pin at once (write-only).
	KnownHost string `json:"known_host,omitempty"`
	// ProxyCommand is a program and its arguments (no shell) whose stdio
	// carries the SSH connection to the first hop.
	ProxyCommand []string `json:"proxy_command,omitempty"`
	// Auth is key (default) or certificate.
	Auth string `json:"auth,omitempty"`
	// HostAuthorities are @cert-authority and @revoked known_hosts lines.
	HostAuthorities []string `json:"host_authorities,omitempty"`
}

// TestDraftRequest is the body of POST /connections/test.
type TestDraftRequest struct {
	ConnectionInput
	// BasedOn names a saved connection whose key pair, pinned host keys
	// and password the draft uses.
	BasedOn string `json:"based_on,omitempty"`
}

// TrustHostKeyRequest is the body of POST
// /connections/{name}/trust-host-key.
type TrustHostKeyRequest struct {
	// Fingerprint is the SHA256 fingerprint of the pending host key.
	Fingerprint string `json:"fingerprint"`
}

// ConnectionView is what the API shows of a saved connection (never its
// secrets).
type ConnectionView struct {
	Name        string `json:"name"`
	Flavor      string `json:"flavor"`
	Host        string `json:"host"`
	Port        int    `json:"port"`
	Database    string `json:"database"`
	User        string `json:"user"`
	HasPassword bool   `json:"has_password"`
	SSLMode     string `json:"sslmode"`
	SSLRootCert string `json:"ssl_root_cert,omitempty"`
	Schema      string `json:"schema,omitempty"`
	// Role is the role sessions act as (set at login); empty: the user.
	Role    string `json:"role,omitempty"`
	Threads int    `json:"threads"`
	// RequireAuth is the connection's require_auth setting ("" is the
	// default policy, EffectiveRequireAuth the one in force).
	RequireAuth          string `json:"require_auth,omitempty"`
	EffectiveRequireAuth string `json:"effective_require_auth"`
	// Auth is where the password comes from when it is not the stored
	// one; nil for password.
	Auth *AuthView `json:"auth,omitempty"`
	// Pooler is the connection pooler in front of the database.
	Pooler string `json:"pooler"`
	// HealthCheckInterval is how often the server tests the connection on
	// its own (absent: never).
	HealthCheckInterval Duration    `json:"health_check_interval,omitempty"`
	SSHTunnel           *TunnelView `json:"ssh_tunnel,omitempty"`
	// SSHHops are every SSH hop, in the order they are dialled (the first
	// is SSHTunnel's host); empty for a direct connection.
	SSHHops   []HopView `json:"ssh_hops,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Health is how the connection has been doing.
	Health *ConnectionHealth `json:"health,omitempty"`
}

// Health statuses of a ConnectionHealth.
const (
	HealthOK      = "ok"      // the newest test, run or use succeeded
	HealthFailing = "failing" // the newest test or run failed, and nothing succeeded since
	HealthUnknown = "unknown" // no test, run or use yet
)

// ConnectionHealth is how a connection has been doing: its last test, its
// last successful use, its tunnels open now (in the answering server
// process) and its recent tests, runs and uses.
type ConnectionHealth struct {
	// Status is ok, failing or unknown, by the newest test, run or
	// successful use.
	Status string `json:"status"`
	// LastTest is the newest connection test.
	LastTest *ConnectionCheck `json:"last_test,omitempty"`
	// LastSuccessfulUse is when a run, query, grants audit or proxy over
	// the connection last succeeded.
	LastSuccessfulUse *time.Time `json:"last_successful_use,omitempty"`
	// Tunnel is the state of the connection's SSH tunnels open now (nil
	// without a tunnel).
	Tunnel *TunnelState `json:"tunnel,omitempty"`
	// Recent are the newest tests, runs and uses, newest first.
	Recent []ConnectionCheck `json:"recent"`
}

// Kinds of a ConnectionCheck.
const (
	CheckTest = "test"
	CheckRun  = "run"
	CheckUse  = "use"
)

// ConnectionCheck is one test, run or use of a connection in its health.
type ConnectionCheck struct {
	// Kind is test, run or use.
	Kind string    `json:"kind"`
	At   time.Time `json:"at"`
	OK   bool      `json:"ok"`
	// Source says what started it: manual or scheduled (tests), the
	// run's trigger (runs), the use (query, grants, proxy).
	Source string `json:"source,omitempty"`
	// Step is a failed test's failing step, or a run's status.
	Step string `json:"step,omitempty"`
	// Detail is a failed test's error, or a run's ID.
	Detail     string `json:"detail,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// TunnelState is what the answering server process knows of a
// connection's open SSH tunnels.
type TunnelState struct {
	// Open counts the tunnels open now.
	Open int `json:"open"`
	// Channels counts the connections open through them.
	Channels int `json:"channels"`
	// LastKeepaliveRTTMS is the round trip of the newest keepalive
	// answered, in milliseconds (0 before one).
	LastKeepaliveRTTMS float64 `json:"last_keepalive_rtt_ms,omitempty"`
	// LastKeepaliveAt is when that keepalive was answered.
	LastKeepaliveAt *time.Time `json:"last_keepalive_at,omitempty"`
	// MissedKeepalives counts keepalive intervals without a reply on the
	// tunnels open now.
	MissedKeepalives int64 `json:"missed_keepalives"`
	// OpenSince is when the oldest of them came up.
	OpenSince *time.Time `json:"open_since,omitempty"`
}

// TunnelView is the SSH tunnel of a ConnectionView.
type TunnelView struct {
	Host              string   `json:"host"`
	Port              int      `json:"port"`
	User              string   `json:"user"`
	KeyType           string   `json:"key_type"`
	KeepaliveInterval Duration `json:"keepalive_interval"`
	KeepaliveCountMax int      `json:"keepalive_count_max"`
	// PublicKey is the authorized_keys line to install on the bastion.
	PublicKey            string `json:"public_key"`
	PublicKeyFingerprint string `json:"public_key_fingerprint"`
	// PreviousPublicKey is the replaced key after a rotation.
	PreviousPublicKey string `json:"previous_public_key,omitempty"`
	// HostKeyFingerprint is the pinned host key's ("" before first use).
	HostKeyFingerprint string `json:"host_key_fingerprint"`
	// HostKeyFingerprints are all the pinned host keys, when more than one.
	HostKeyFingerprints []string `json:"host_key_fingerprints,omitempty"`
	// PendingHostKeyFingerprint is a presented key waiting for approval.
	PendingHostKeyFingerprint string     `json:"pending_host_key_fingerprint,omitempty"`
	PendingHostKeySeen        *time.Time `json:"pending_host_key_seen,omitempty"`
	// HostKeyUnverified is true when the bastion's pinned keys were only
	// given with the connection, never presented by it: approving the key
	// it presents replaces no confirmed pin, so an editor may.
	HostKeyUnverified bool `json:"host_key_unverified,omitempty"`
	// KeyUsedAt is when an SSH login with the key last succeeded.
	KeyUsedAt *time.Time `json:"key_used_at,omitempty"`
	// Auth is how pgrelay logs in: certificate, or absent for the key pair.
	Auth string `json:"auth,omitempty"`
	// ProxyCommand carries the SSH connection to the first hop, if any.
	ProxyCommand []string `json:"proxy_command,omitempty"`
	// HostAuthorities are the connection's @cert-authority and @revoked
	// lines.
	HostAuthorities []string `json:"host_authorities,omitempty"`
	// Rotation is a key rotation with two live keys under way, or the
	// last one's outcome.
	Rotation *KeyRotationView `json:"key_rotation,omitempty"`
}

// ConnectionList is the body of GET /connections.
type ConnectionList struct {
	Connections []*ConnectionView `json:"connections"`
}

// PublicKeyResponse is the body of GET /connections/{name}/public-key.
type PublicKeyResponse struct {
	// PublicKey is an authorized_keys line (restricted with
	// ?restricted=true).
	PublicKey string `json:"public_key"`
	// Hops are, with ?restricted=true, each hop's line: forwarding only
	// to the next hop (the last one: to the database).
	Hops []HopKeyLines `json:"hops,omitempty"`
}

// KeyRotation is the body of POST /connections/{name}/rotate-key.
type KeyRotation struct {
	// Old is the replaced authorized_keys line: remove it from the bastion.
	Old string `json:"old_public_key"`
	// New is the new authorized_keys line: add it to the bastion.
	New string `json:"public_key"`
	// Hops are the restricted lines of each hop.
	Hops []HopKeyLines `json:"hops,omitempty"`
	// OldKeyExpiresAt is the expiry-time on Old (rotations with two live
	// keys).
	OldKeyExpiresAt *time.Time `json:"old_key_expires_at,omitempty"`
	// Connection is the connection afterwards.
	Connection *ConnectionView `json:"connection,omitempty"`
}
