package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
)

// ConnectionView is what every face shows of a connection. It never holds a
// secret.
type ConnectionView struct {
	Name        string             `json:"name"`
	Flavor      connection.Flavor  `json:"flavor"`
	Host        string             `json:"host"`
	Port        int                `json:"port"`
	Database    string             `json:"database"`
	User        string             `json:"user"`
	HasPassword bool               `json:"has_password"`
	SSLMode     connection.SSLMode `json:"sslmode"`
	SSLRootCert string             `json:"ssl_root_cert,omitempty"`
	Schema      string             `json:"schema,omitempty"`
	// Role is the role sessions act as (set at login); empty: the user.
	Role    string `json:"role,omitempty"`
	Threads int    `json:"threads"`
	// RequireAuth is the connection's require_auth setting ("" is the
	// default policy, EffectiveRequireAuth the one in force).
	RequireAuth          string `json:"require_auth,omitempty"`
	EffectiveRequireAuth string `json:"effective_require_auth"`
	// Auth is where the password comes from when it is not the stored
	// one (auth kinds command, lakebase, alloydb-iam); nil for password.
	Auth *AuthView `json:"auth,omitempty"`
	// Pooler is the connection pooler in front of the database: none,
	// transaction or session.
	Pooler connection.Pooler `json:"pooler"`
	// HealthCheckInterval is how often the server tests the connection on
	// its own (0: never).
	HealthCheckInterval connection.Duration `json:"health_check_interval,omitempty"`
	SSHTunnel           *TunnelView         `json:"ssh_tunnel,omitempty"`
	// SSHHops are every SSH hop, in the order they are dialled (the first
	// is SSHTunnel's host); empty for a direct connection.
	SSHHops   []HopView `json:"ssh_hops,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Health is how the connection has been doing (GetConnection and
	// ListConnections fill it in).
	Health *ConnectionHealth `json:"health,omitempty"`
}

// TunnelView is the tunnel part of a ConnectionView.
type TunnelView struct {
	Host              string              `json:"host"`
	Port              int                 `json:"port"`
	User              string              `json:"user"`
	KeyType           string              `json:"key_type"`
	KeepaliveInterval connection.Duration `json:"keepalive_interval"`
	KeepaliveCountMax int                 `json:"keepalive_count_max"`
	// PublicKey is the authorized_keys line to install on the bastion.
	PublicKey string `json:"public_key"`
	// PublicKeyFingerprint is the SHA256 fingerprint of PublicKey.
	PublicKeyFingerprint string `json:"public_key_fingerprint"`
	// PreviousPublicKey is the key replaced by the last rotation.
	PreviousPublicKey string `json:"previous_public_key,omitempty"`
	// HostKeyFingerprint is the pinned bastion host key ("" until the first
	// successful connection pins it).
	HostKeyFingerprint string `json:"host_key_fingerprint"`
	// HostKeyFingerprints are all the bastion's pinned host keys, when it
	// has more than one.
	HostKeyFingerprints []string `json:"host_key_fingerprints,omitempty"`
	// PendingHostKeyFingerprint is a different host key the bastion
	// presented, waiting for approval.
	PendingHostKeyFingerprint string     `json:"pending_host_key_fingerprint,omitempty"`
	PendingHostKeySeen        *time.Time `json:"pending_host_key_seen,omitempty"`
	// HostKeyUnverified is true when the bastion's pinned keys were only
	// given with the connection, never presented by it (HopView).
	HostKeyUnverified bool `json:"host_key_unverified,omitempty"`
	// KeyUsedAt is when an SSH login to this bastion with this key last
	// succeeded (in a test, query, run or proxy; recorded at most once a
	// minute); nil until one did, so the key may not be installed yet.
	KeyUsedAt *time.Time `json:"key_used_at,omitempty"`
	// Auth is how pgrelay logs in: certificate, or absent for the
	// connection's key pair (key).
	Auth connection.SSHAuth `json:"auth,omitempty"`
	// ProxyCommand is the program and arguments that carry the SSH
	// connection to the first hop, if any.
	ProxyCommand []string `json:"proxy_command,omitempty"`
	// HostAuthorities are the connection's @cert-authority and @revoked
	// lines.
	HostAuthorities []string `json:"host_authorities,omitempty"`
	// Rotation is a key rotation with two live keys, while the new key
	// waits to log in (nil otherwise), or the last one's outcome.
	Rotation *KeyRotationView `json:"key_rotation,omitempty"`
}

// Spec returns the connection's spec without password, as it can be edited.
func (v *ConnectionView) Spec() connection.Spec {
	s := connection.Spec{Name: v.Name, Flavor: v.Flavor, Host: v.Host, Port: v.Port, Database: v.Database,
		User: v.User, SSLMode: v.SSLMode, SSLRootCert: v.SSLRootCert, Schema: v.Schema, Role: v.Role, Threads: v.Threads,
		RequireAuth: v.RequireAuth, HealthCheckInterval: v.HealthCheckInterval}
	if v.Pooler != connection.PoolerNone {
		s.Pooler = v.Pooler
	}
	if v.Auth != nil {
		s.Auth = v.Auth.Auth.Clone()
	}
	if t := v.SSHTunnel; t != nil {
		s.Tunnel = &connection.Tunnel{Host: t.Host, Port: t.Port, User: t.User, KeyType: t.KeyType,
			KeepaliveInterval: t.KeepaliveInterval, KeepaliveCountMax: t.KeepaliveCountMax,
			Auth: t.Auth, ProxyCommand: slices.Clone(t.ProxyCommand), HostAuthorities: slices.Clone(t.HostAuthorities)}
		for _, h := range v.SSHHops[min(1, len(v.SSHHops)):] {
			s.Tunnel.Next = append(s.Tunnel.Next, connection.Hop{Host: h.Host, Port: h.Port, User: h.User, OwnKey: h.OwnKey})
		}
	}
	return s
}

func view(c *store.Connection) *ConnectionView {
	s := c.Spec
	v := &ConnectionView{Name: s.Name, Flavor: s.Flavor, Host: s.Host, Port: s.Port, Database: s.Database,
		User: s.User, HasPassword: len(c.SealedPassword) > 0, SSLMode: s.SSLMode, SSLRootCert: s.SSLRootCert,
		Schema: s.Schema, Role: s.Role, Threads: s.Threads, RequireAuth: s.RequireAuth, EffectiveRequireAuth: s.EffectiveRequireAuth(),
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, Auth: authView(c), Pooler: s.EffectivePooler(),
		HealthCheckInterval: s.HealthCheckInterval}
	if t := s.Tunnel; t != nil {
		tv := &TunnelView{Host: t.Host, Port: t.Port, User: t.User, KeyType: t.KeyType,
			KeepaliveInterval: t.KeepaliveInterval, KeepaliveCountMax: t.KeepaliveCountMax,
			PreviousPublicKey: c.PreviousPublicKey, KeyUsedAt: keyUsedAt(c),
			Auth: t.Auth, ProxyCommand: slices.Clone(t.ProxyCommand), HostAuthorities: slices.Clone(t.HostAuthorities),
			Rotation: rotationView(c)}
		if tv.Auth == connection.SSHAuthKey {
			tv.Auth = "" // the default shows as absent, as before there were certificates
		}
		if pub, err := sshkey.ParsePublic(c.SSHPublicKey); err == nil {
			tv.PublicKey = sshkey.AuthorizedKey(pub, sshkey.Comment(s.Name))
			tv.PublicKeyFingerprint = sshkey.Fingerprint(pub)
		}
		v.SSHHops = hopViews(c)
		if len(v.SSHHops) > 0 {
			first := v.SSHHops[0]
			tv.HostKeyFingerprint, tv.HostKeyFingerprints = first.HostKeyFingerprint, first.HostKeyFingerprints
			tv.PendingHostKeyFingerprint, tv.PendingHostKeySeen = first.PendingHostKeyFingerprint, first.PendingHostKeySeen
			tv.HostKeyUnverified = first.HostKeyUnverified
		}
		v.SSHTunnel = tv
	}
	return v
}

func bastionAddr(t *connection.Tunnel) string {
	return net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// passwordAD binds a sealed password to its record and to the endpoint it
// was saved for (host, port, user and SSH hops): opened for any other
// endpoint, the password fails to decrypt, so it can never be sent there.
func passwordAD(id string, e connection.Endpoint) []byte {
	return []byte("pgrelay/connection/" + id + "/password\x00endpoint=" + e.Key())
}

// legacyPasswordAD is the associated data of passwords sealed before they
// were bound to their endpoint; such a password is sealed again, bound, the
// first time it is opened.
func legacyPasswordAD(id string) []byte { return []byte("pgrelay/connection/" + id + "/password") }

func privateKeyAD(id string) []byte { return []byte("pgrelay/connection/" + id + "/ssh_private_key") }

// sealPassword stores pw sealed on c (or clears it when empty).
func (s *Connector) sealPassword(c *store.Connection, pw secret.Value) error {
	if pw.IsZero() {
		c.SealedPassword = nil
		return nil
	}
	sealed, err := s.keyring.Seal([]byte(pw.Reveal()), passwordAD(c.ID, c.Spec.Endpoint()))
	if err != nil {
		return err
	}
	c.SealedPassword = sealed
	return nil
}

// newKeyPair generates a key pair for c's tunnel and stores it sealed.
func (s *Service) newKeyPair(c *store.Connection) error {
	t, err := sshkey.ParseType(c.Spec.Tunnel.KeyType)
	if err != nil {
		return err
	}
	pair, err := sshkey.Generate(t, sshkey.Comment(c.Spec.Name))
	if err != nil {
		return err
	}
	sealed, err := s.keyring.Seal(pair.PrivatePEM, privateKeyAD(c.ID))
	if err != nil {
		return err
	}
	c.SealedPrivateKey = sealed
	c.SSHPublicKey = sshkey.AuthorizedKey(pair.Public, "")
	return nil
}

func prepare(spec *connection.Spec) error {
	spec.Host = strings.TrimSpace(spec.Host)
	spec.ApplyDefaults()
	return spec.Validate()
}

// CreateConnection validates and saves a new connection. With a tunnel it
// generates the connection's key pair; the returned view carries the
// public key to install on the bastion. Host keys given in
// spec.Tunnel.KnownHost are pinned at once.
func (s *Service) CreateConnection(ctx context.Context, spec connection.Spec) (_ *ConnectionView, err error) {
	defer s.audited(ctx, &entry{action: "connection.create", targetKind: audit.TargetConnection, target: spec.Name}, &err)
	spec = spec.Clone()
	authSecret, _, authErr := s.prepareAuth(nil, &spec)
	if err := joinProblems(prepare(&spec), authErr); err != nil {
		return nil, err
	}
	known, err := knownHostKeys(&spec)
	if err != nil {
		return nil, err
	}
	if err := s.checkSSHSettings(ctx, &spec); err != nil {
		return nil, err
	}
	now := s.now().UTC()
	pw := spec.Password
	spec.Password = secret.Value{}
	clearAuthSecrets(&spec)
	c := &store.Connection{ID: newID(), Spec: spec, CreatedAt: now, UpdatedAt: now}
	if err := s.sealPassword(c, pw); err != nil {
		return nil, fmt.Errorf("create connection %s: %w", spec.Name, err)
	}
	if err := s.sealAuthSecret(c, authSecret); err != nil {
		return nil, fmt.Errorf("create connection %s: %w", spec.Name, err)
	}
	if spec.Tunnel != nil {
		if err := s.newKeyPair(c); err != nil {
			return nil, fmt.Errorf("create connection %s: %w", spec.Name, err)
		}
	}
	if err := s.syncHopKeys(c); err != nil {
		return nil, fmt.Errorf("create connection %s: %w", spec.Name, err)
	}
	pinKnownHostKeys(c, nil, known)
	if err := s.store.CreateConnection(ctx, c); err != nil {
		return nil, err
	}
	s.logKnownHostKeys(ctx, spec.Name, known)
	s.logger.InfoContext(ctx, "connection created", "connection", spec.Name, "flavor", spec.Flavor,
		"tunnel", spec.Tunnel != nil, "auth", spec.AuthKind())
	return view(c), nil
}

// GetConnection returns a connection's view.
func (s *Service) GetConnection(ctx context.Context, name string) (*ConnectionView, error) {
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	v := s.withToken(view(c), c)
	checks, err := s.store.ConnectionChecks(ctx, c.ID, healthHistory)
	if err != nil {
		return nil, err
	}
	v.Health = s.health(c, checks)
	return v, nil
}

// ListConnections returns every connection's view, ordered by name.
func (s *Service) ListConnections(ctx context.Context) ([]*ConnectionView, error) {
	cs, err := s.store.ListConnections(ctx)
	if err != nil {
		return nil, err
	}
	recent, err := s.store.RecentChecks(ctx, healthHistory)
	if err != nil {
		return nil, err
	}
	out := make([]*ConnectionView, 0, len(cs))
	for _, c := range cs {
		v := s.withToken(view(c), c)
		v.Health = s.health(c, recent[c.ID])
		out = append(out, v)
	}
	return out, nil
}

// UpdateConnection replaces the connection's settings with spec (whose Name
// must be the connection's). A nil password keeps the stored one, unless
// the endpoint (host, port, user or SSH bastion) changes: a stored password
// is only sent to the endpoint it was saved for, so that change is refused
// with a field error on "password" until the password is given again. Adding a
// tunnel, or changing its key type, generates a new key pair; changing the
// bastion's address forgets its pinned host key and any key waiting for
// approval. Host keys given in spec.Tunnel.KnownHost replace the pins;
// without them the pins are kept.
func (s *Service) UpdateConnection(ctx context.Context, name string, spec connection.Spec, password *secret.Value) (_ *ConnectionView, err error) {
	e := &entry{action: "connection.update", targetKind: audit.TargetConnection, target: name}
	if password != nil {
		e.detail = "password changed"
	}
	defer s.audited(ctx, e, &err)
	spec = spec.Clone()
	if spec.Name == "" {
		spec.Name = name
	}
	if spec.Name != name {
		return nil, &ValidationError{Subject: fielderr.Connection, Problems: []fielderr.Problem{{Field: "name",
			Problem: fmt.Sprintf("a connection cannot be renamed (from %q to %q): create a new one and delete this one", name, spec.Name)}}}
	}
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	// The auth secret kept fills in the service account before the spec
	// is validated against it.
	authSecret, keepAuthSecret, authErr := s.prepareAuth(c, &spec)
	if err := joinProblems(prepare(&spec), authErr); err != nil {
		return nil, err
	}
	known, err := knownHostKeys(&spec)
	if err != nil {
		return nil, err
	}
	if err := s.checkSSHSettings(ctx, &spec); err != nil {
		return nil, err
	}
	spec.Password = secret.Value{}
	clearAuthSecrets(&spec)
	old := c.Spec
	if spec.AuthKind().IsToken() {
		// The token is the password: a stored one is no longer used.
		c.SealedPassword = nil
	}
	pins := readPins(c, &old)
	for addr, keys := range known {
		if replacesPins(findPins(pins, addr), keys) {
			if err := mayReplacePins(ctx, name, addr); err != nil {
				return nil, err
			}
		}
	}
	if password == nil && len(c.SealedPassword) > 0 && !old.Endpoint().Covers(spec.Endpoint()) {
		return nil, &ValidationError{Subject: fielderr.Connection, Problems: []fielderr.Problem{
			connection.PasswordAgainProblem(old.Endpoint(), spec.Endpoint())}}
	}
	c.Spec = spec
	storedAt := c.UpdatedAt
	c.UpdatedAt = s.now().UTC()
	if password != nil {
		if err := s.sealPassword(c, *password); err != nil {
			return nil, fmt.Errorf("update connection %s: %w", name, err)
		}
	}
	if !keepAuthSecret {
		if err := s.sealAuthSecret(c, authSecret); err != nil {
			return nil, fmt.Errorf("update connection %s: %w", name, err)
		}
	}
	switch {
	case spec.Tunnel == nil:
		c.SSHPublicKey, c.SealedPrivateKey, c.PreviousPublicKey = "", nil, ""
		c.PendingPublicKey, c.SealedPendingPrivateKey = "", nil
	case old.Tunnel == nil || old.Tunnel.KeyType != spec.Tunnel.KeyType || c.SSHPublicKey == "":
		prev := c.SSHPublicKey
		if err := s.newKeyPair(c); err != nil {
			return nil, fmt.Errorf("update connection %s: %w", name, err)
		}
		c.PreviousPublicKey = prev
		// A rotation's new key has the old type: the new pair replaces it.
		c.PendingPublicKey, c.SealedPendingPrivateKey = "", nil
	}
	// Hops keep their own key pairs while they keep own_key.
	if err := s.syncHopKeys(c); err != nil {
		return nil, fmt.Errorf("update connection %s: %w", name, err)
	}
	// Pins stay with their address (a pin of an address that is no longer
	// a hop is forgotten, and so is a key waiting for approval there: it
	// must not be approved for another server); keys given with the update
	// are pinned for their hop.
	pinKnownHostKeys(c, pins, known)
	if password == nil && authSecret.IsZero() && s.unchanged(ctx, c) {
		// Nothing to change: nothing is written, and updated_at stays.
		e.detail = "unchanged"
		c.UpdatedAt = storedAt
		return view(c), nil
	}
	if err := s.store.UpdateConnection(ctx, c); err != nil {
		return nil, err
	}
	s.logKnownHostKeys(ctx, name, known)
	s.logger.InfoContext(ctx, "connection updated", "connection", name, "password_changed", password != nil,
		"auth", spec.AuthKind(), "auth_secret_changed", !authSecret.IsZero())
	return view(c), nil
}

// unchanged reports whether c, updated in memory, is the record stored
// (but for UpdatedAt), read again: c's own fields may share what the
// update changed. An update given a password or an auth secret is never
// unchanged (a sealed value is new each time it is sealed).
func (s *Service) unchanged(ctx context.Context, c *store.Connection) bool {
	stored, err := s.store.GetConnection(ctx, c.Spec.Name)
	if err != nil || stored.ID != c.ID || stored.Version != c.Version {
		return false
	}
	next := *c
	next.UpdatedAt = stored.UpdatedAt
	return sameValue(reflect.ValueOf(next), reflect.ValueOf(*stored))
}

// sameValue is reflect.DeepEqual but for empty slices and maps, which
// equal nil ones: a record read from the store and the same record
// rebuilt by an update differ in no more than that.
func sameValue(a, b reflect.Value) bool {
	if a.Kind() != b.Kind() || a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Slice, reflect.Array:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !sameValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		for _, k := range a.MapKeys() {
			if v := b.MapIndex(k); !v.IsValid() || !sameValue(a.MapIndex(k), v) {
				return false
			}
		}
		return true
	case reflect.Struct:
		for i := range a.NumField() {
			if !sameValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		if a.Kind() == reflect.Pointer && a.Pointer() == b.Pointer() {
			return true
		}
		return sameValue(a.Elem(), b.Elem())
	case reflect.Func, reflect.Chan, reflect.UnsafePointer:
		return a.IsNil() && b.IsNil()
	}
	return a.Equal(b)
}

// DeleteConnection removes a connection and its keys.
func (s *Service) DeleteConnection(ctx context.Context, name string) (err error) {
	defer s.audited(ctx, &entry{action: "connection.delete", targetKind: audit.TargetConnection, target: name}, &err)
	c, _ := s.store.GetConnection(ctx, name)
	// A job whose connection is gone fails every run: say so now.
	js, err := s.store.ListJobs(ctx)
	if err != nil {
		return fmt.Errorf("delete connection %s: %w", name, err)
	}
	var users []string
	for _, j := range js {
		if j.Job.Connection == name {
			users = append(users, j.Job.Name)
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("%w: connection %s is used by job %s: delete those jobs (pgrelay job delete NAME) or point them at another connection first",
			ErrInvalid, name, strings.Join(users, ", "))
	}
	if err := s.store.DeleteConnection(ctx, name); err != nil {
		return err
	}
	if c != nil {
		s.credentials.Forget(c.ID)
	}
	if s.metrics != nil {
		s.metrics.ForgetConnection(name)
	}
	s.logger.InfoContext(ctx, "connection deleted", "connection", name)
	return nil
}

// PublicKey returns the authorized_keys line for a connection's tunnel key;
// restricted prefixes options that allow only forwarding to the database
// and, for a chain of hops, returns one line per hop (one per line, in
// hop order), each allowed to forward only to the next hop, the last to
// the database (see PublicKeys).
func (s *Service) PublicKey(ctx context.Context, name string, restricted bool) (string, error) {
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return "", err
	}
	if !restricted {
		return publicKeyLine(c, false)
	}
	lines, err := hopKeyLines(c)
	if err != nil {
		return "", err
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Line
	}
	return strings.Join(out, "\n"), nil
}

// publicKeyLine is the authorized_keys line of c's key: with restricted,
// the line of its first hop.
func publicKeyLine(c *store.Connection, restricted bool) (string, error) {
	if c.Spec.Tunnel == nil || c.SSHPublicKey == "" {
		return "", invalidf("connection %s has no SSH tunnel, so it has no public key; add one with `pgrelay connection update %s --ssh-host HOST --ssh-user USER`", c.Spec.Name, c.Spec.Name)
	}
	pub, err := sshkey.ParsePublic(c.SSHPublicKey)
	if err != nil {
		return "", fmt.Errorf("connection %s: stored public key: %w", c.Spec.Name, err)
	}
	if restricted {
		return sshkey.RestrictedTo(pub, sshkey.Comment(c.Spec.Name), forwardTarget(&c.Spec, 0)), nil
	}
	return sshkey.AuthorizedKey(pub, sshkey.Comment(c.Spec.Name)), nil
}

// KeyRotation is the result of RotateKey and of the steps of a rotation
// with two live keys.
type KeyRotation struct {
	// Old is the replaced (or, while a rotation is pending, the current)
	// authorized_keys line: remove it from the bastion. After
	// `rotate-key --start` it carries expiry-time="…Z" (UTC, OpenSSH 8.5
	// and later), so that sshd refuses it after that time even if nobody
	// removes it.
	Old string `json:"old_public_key"`
	// New is the new authorized_keys line: add it to the bastion.
	New string `json:"public_key"`
	// Hops are the restricted lines of each hop (permitopen to the next
	// hop; the last one to the database).
	Hops []HopKeyLines `json:"hops,omitempty"`
	// OldKeyExpiresAt is the expiry-time on Old (rotations with two live
	// keys).
	OldKeyExpiresAt *time.Time `json:"old_key_expires_at,omitempty"`
	// Connection is the connection afterwards.
	Connection *ConnectionView `json:"connection,omitempty"`
}

// RotateKey replaces a connection's tunnel key pair, and the own key pairs
// of its hops, at once: logins fail until the new keys are installed
// (RotateKeyStart avoids that). A rotation with two live keys under way is
// dropped.
func (s *Service) RotateKey(ctx context.Context, name string) (_ *KeyRotation, err error) {
	e := &entry{action: "connection.rotate_key", targetKind: audit.TargetConnection, target: name}
	defer s.audited(ctx, e, &err)
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	oldLine, err := publicKeyLine(c, false)
	if err != nil {
		return nil, err
	}
	prev := c.SSHPublicKey
	if err := s.newKeyPair(c); err != nil {
		return nil, fmt.Errorf("rotate key of %s: %w", name, err)
	}
	c.PreviousPublicKey = prev
	if c.RotationPending() {
		c.PendingPublicKey, c.SealedPendingPrivateKey = "", nil
		c.KeyRotation.CancelledAt = s.now().UTC()
	}
	// The hops' own keys are replaced too.
	c.HopKeys = nil
	if err := s.syncHopKeys(c); err != nil {
		return nil, fmt.Errorf("rotate key of %s: %w", name, err)
	}
	c.UpdatedAt = s.now().UTC()
	if err := s.store.UpdateConnection(ctx, c); err != nil {
		return nil, err
	}
	newLine, err := publicKeyLine(c, false)
	if err != nil {
		return nil, err
	}
	e.use = connUse(c)
	s.logger.InfoContext(ctx, "tunnel key rotated", "connection", name)
	rot := &KeyRotation{Old: oldLine, New: newLine}
	if len(c.HopKeys) > 0 {
		// The hops' lines, as some hops have new keys of their own.
		if rot.Hops, err = hopKeyLines(c); err != nil {
			return nil, err
		}
	}
	return rot, nil
}

// TrustHostKey approves the host key with the given fingerprint: the
// pending key a hop last presented. It replaces that hop's pinned keys.
func (s *Service) TrustHostKey(ctx context.Context, name, fingerprint string) (_ *ConnectionView, err error) {
	fingerprint = strings.TrimSpace(fingerprint)
	// The detail names the key asked for; the outcome says whether it was
	// approved (a refused approval is no approval).
	defer s.audited(ctx, &entry{action: "connection.trust_host_key", targetKind: audit.TargetConnection, target: name,
		detail: "host key " + auditFingerprint(fingerprint)}, &err)
	if !strings.HasPrefix(fingerprint, "SHA256:") {
		return nil, &ValidationError{Subject: fielderr.Connection, Problems: []fielderr.Problem{{Field: "fingerprint",
			Problem: fmt.Sprintf("%q is not accepted: give the SHA256 fingerprint shown in the error or by `pgrelay connection show %s`, e.g. SHA256:abc...", fingerprint, name)}}}
	}
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	if c.Spec.Tunnel == nil {
		return nil, invalidf("connection %s has no SSH tunnel", name)
	}
	pins := readPins(c, &c.Spec)
	var pending []*store.HopHostKeys
	for _, h := range c.Spec.Hops() {
		if e := findPins(pins, h.Addr()); e != nil && e.Pending != "" && !slices.Contains(pending, e) {
			pending = append(pending, e)
		}
	}
	if addr, ok := pinnedAt(pins, c.Spec.Hops(), fingerprint); ok && !pendingHas(pending, fingerprint) {
		waiting := ""
		for _, e := range pending {
			if k, err := sshkey.ParsePublic(e.Pending); err == nil {
				waiting += fmt.Sprintf("; the key waiting for approval at %s is %s: confirm it with the bastion's administrator "+
					"before approving it with that fingerprint", e.Addr, sshkey.Fingerprint(k))
			}
		}
		return nil, invalidf("host key %s is already pinned for %s of connection %s: nothing to approve "+
			"(`pgrelay connection show %s` lists the pinned keys)%s", fingerprint, addr, name, name, waiting)
	}
	if len(pending) == 0 {
		return nil, invalidf("connection %s has no host key waiting for approval; connect first (e.g. `pgrelay query %s 'select 1'`) so the bastion presents its key", name, name)
	}
	var match *store.HopHostKeys
	var got []string
	for _, e := range pending {
		k, err := sshkey.ParsePublic(e.Pending)
		if err != nil {
			return nil, fmt.Errorf("connection %s: stored pending host key: %w", name, err)
		}
		fp := sshkey.Fingerprint(k)
		if fp == fingerprint {
			match = e
			break
		}
		got = append(got, fp)
	}
	if match == nil {
		return nil, invalidf("fingerprint %s does not match the host key the bastion presented (%s); check the key on the bastion with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`", fingerprint, strings.Join(got, " or "))
	}
	if presented, err := sshkey.ParsePublic(match.Pending); err == nil && replacesPins(match, []ssh.PublicKey{presented}) {
		// A changed key, not a first one.
		if err := mayReplacePins(ctx, name, match.Addr); err != nil {
			return nil, err
		}
	}
	match.Keys = []string{match.Pending}
	match.Pending, match.PendingSeen = "", time.Time{}
	addr := match.Addr
	writePins(c, pins)
	c.UpdatedAt = s.now().UTC()
	if err := s.store.UpdateConnection(ctx, c); err != nil {
		return nil, err
	}
	s.logger.InfoContext(ctx, "bastion host key trusted", "connection", name, "bastion", addr, "fingerprint", fingerprint)
	return view(c), nil
}

// pinnedAt returns the address of the hop, among hops, that has a key
// with the fingerprint pinned.
func pinnedAt(pins []store.HopHostKeys, hops []connection.Hop, fingerprint string) (string, bool) {
	for _, h := range hops {
		e := findPins(pins, h.Addr())
		if e == nil {
			continue
		}
		for _, line := range e.Keys {
			if k, err := sshkey.ParsePublic(line); err == nil && sshkey.Fingerprint(k) == fingerprint {
				return h.Addr(), true
			}
		}
	}
	return "", false
}

// pendingHas reports whether one of the keys waiting for approval has the
// fingerprint.
func pendingHas(pending []*store.HopHostKeys, fingerprint string) bool {
	for _, e := range pending {
		if k, err := sshkey.ParsePublic(e.Pending); err == nil && sshkey.Fingerprint(k) == fingerprint {
			return true
		}
	}
	return false
}

// pinHostKey records key as the pinned host key of the hop at addr (first
// use).
func (s *Connector) pinHostKey(ctx context.Context, name string, addr string, key ssh.PublicKey) error {
	for range 3 {
		c, err := s.store.GetConnection(ctx, name)
		if err != nil {
			return err
		}
		pins := readPins(c, &c.Spec)
		e := pinsAt(&pins, addr)
		if len(e.Keys) > 0 {
			// Another session pinned first: the same key is fine (two
			// runs that first used the bastion at once); another one
			// means the bastion presented two different keys.
			// Compared as keys: a pin given with the connection carries
			// a comment (givenPin).
			if slices.ContainsFunc(e.Keys, func(line string) bool {
				k, err := sshkey.ParsePublic(line)
				return err == nil && bytes.Equal(k.Marshal(), key.Marshal())
			}) {
				return nil
			}
			return fmt.Errorf("bastion %s: another host key was pinned concurrently; retry", addr)
		}
		e.Keys = []string{sshkey.AuthorizedKey(key, "")}
		e.Pending, e.PendingSeen = "", time.Time{}
		writePins(c, pins)
		err = s.store.UpdateConnection(ctx, c)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		s.logger.InfoContext(ctx, "bastion host key pinned on first use", "connection", name,
			"bastion", addr, "fingerprint", sshkey.Fingerprint(key))
		s.audited(ctx, &entry{action: "connection.pin_host_key", targetKind: audit.TargetConnection, target: name,
			detail: "trusted on first use: " + sshkey.Fingerprint(key) + " at " + addr}, nil)
		return nil
	}
	return fmt.Errorf("pin host key of %s: %w", addr, store.ErrConflict)
}

// recordPendingHostKey saves a presented, unpinned host key of the hop at
// addr for approval.
func (s *Connector) recordPendingHostKey(ctx context.Context, name, addr string, key ssh.PublicKey) error {
	for range 3 {
		c, err := s.store.GetConnection(ctx, name)
		if err != nil {
			return err
		}
		pins := readPins(c, &c.Spec)
		e := pinsAt(&pins, addr)
		e.Pending = sshkey.AuthorizedKey(key, "")
		e.PendingSeen = s.now().UTC()
		writePins(c, pins)
		err = s.store.UpdateConnection(ctx, c)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return err
	}
	return store.ErrConflict
}
