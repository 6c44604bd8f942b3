// Package app holds pgrelay's use cases: saving and reading connections,
// managing their keys and host keys, opening them (directly or through a
// tunnel), running queries and serving a local proxy. It is the only package
// that combines the store, the keyring and the engine; the CLI, the REST API
// and the web UI call it and nothing below it.
package app

import (
	"context"

	"errors"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"log/slog"
	"time"

	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tracing"
)

// Config configures a Service.
type Config struct {
	Store   store.Store
	Keyring *secret.Keyring
	Logger  *slog.Logger
	// Now returns the current time; default time.Now.
	Now func() time.Time
	// DialTimeout bounds the TCP connect and SSH handshake to a bastion;
	// default 10s.
	DialTimeout time.Duration
	// Metrics receives tunnel and test metrics; nil disables them.
	Metrics *metrics.Metrics
	// HostKeyPolicy says whether a bastion's first host key is pinned
	// (tofu, the default) or held for approval (approve).
	HostKeyPolicy HostKeyPolicy
	// Network is the policy on the addresses connections may dial (the
	// bastion, or the database when direct, and the HTTPS endpoints of
	// Lakebase and AlloyDB tokens); nil is egress's default,
	// which denies link-local and cloud metadata addresses.
	Network *egress.Policy
	// Credentials configures token credentials (auth kinds command,
	// lakebase and alloydb-iam): the command allowlist among them.
	Credentials CredentialConfig
	// SSH holds the settings of SSH hops: the server's known_hosts, which
	// proxy commands may run, an outside certificate signer (ssh.go).
	SSH SSHConfig
	// TracerProvider receives the use cases' spans (connection opens, SSH
	// dials per hop, database connects, statements, tests); nil is off.
	TracerProvider trace.TracerProvider

	// Connector opens connections; nil builds one from the fields above
	// (NewConnector).
	Connector *Connector
	// Queue queues and stops runs (package queue, built on the
	// Connector's Open); nil: queuing a run fails with ErrNoQueue.
	Queue JobQueue
}

// Connector opens saved connections: it decrypts their secrets with the
// keyring and, for a tunnelled connection, connects to the bastion under
// the host key policy (pinning or holding keys in the store) and the
// network policy, counting tunnels in the metrics. It is what the job
// queue needs of the use cases, so it is built before both: the queue
// takes its Open, the Service takes the Connector and the queue. It is
// safe for concurrent use.
type Connector struct {
	store       store.Store
	keyring     *secret.Keyring
	logger      *slog.Logger
	now         func() time.Time
	dialTimeout time.Duration
	metrics     *metrics.Metrics

	hostKeyPolicy HostKeyPolicy
	network       *egress.Policy
	// credentials holds one token cache per connection with token auth.
	credentials *credential.Registry
	credOpts    credential.Options
	ssh         sshSettings
	// tunnels are this process's open tunnels (connection health).
	tunnels *tunnelSet
	tracer  trace.Tracer
}

// Service runs pgrelay's use cases. It is safe for concurrent use.
type Service struct {
	*Connector
	queue JobQueue
}

// NewConnector returns the Connector of cfg (its Store, Keyring, Logger,
// Now, DialTimeout, Metrics, HostKeyPolicy, Network, Credentials and
// TracerProvider).
func NewConnector(cfg Config) (*Connector, error) {
	if cfg.Store == nil || cfg.Keyring == nil {
		return nil, errors.New("app: store and keyring are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	policy, err := ParseHostKeyPolicy(string(cfg.HostKeyPolicy))
	if err != nil {
		return nil, fmt.Errorf("app: host key policy: %w", err)
	}
	credOpts := credentialOptions(cfg.Credentials, cfg.Network)
	return &Connector{store: keyGuard{Store: cfg.Store, kr: cfg.Keyring}, keyring: cfg.Keyring, logger: cfg.Logger, now: cfg.Now,
		dialTimeout: cfg.DialTimeout, metrics: cfg.Metrics,
		hostKeyPolicy: policy, network: cfg.Network, ssh: newSSHSettings(cfg.SSH),
		credentials: newCredentials(cfg.Credentials, credOpts, cfg.Metrics, cfg.Logger), credOpts: credOpts,
		tunnels: newTunnelSet(), tracer: tracing.Tracer(cfg.TracerProvider)}, nil
}

// New returns a Service on cfg.Connector, or on a Connector built from
// cfg when it has none.
func New(cfg Config) (*Service, error) {
	c := cfg.Connector
	if c == nil {
		var err error
		if c, err = NewConnector(cfg); err != nil {
			return nil, err
		}
	}
	return &Service{Connector: c, queue: cfg.Queue}, nil
}

// Error kinds the faces map to exit codes and HTTP statuses.
var (
	// ErrNotFound: the named record does not exist.
	ErrNotFound = store.ErrNotFound
	// ErrExists: a record with that name exists.
	ErrExists = store.ErrExists
	// ErrConflict: the record changed concurrently.
	ErrConflict = store.ErrConflict
	// ErrInvalid: the request is not acceptable (besides field validation).
	ErrInvalid = errors.New("invalid request")
	// ErrForbidden: the request's role allows the route but not what this
	// request would do there (e.g. replacing a pinned host key).
	ErrForbidden = errors.New("forbidden")
)

// InvalidError is a request error that is not about one field.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// ValidationError is re-exported for faces: every field problem at once.
type ValidationError = fielderr.Error

// Ready reports whether the service can serve: the store answers, and its
// secrets are still sealed with this process's master key (ErrKeyRotated
// after a rotation by another process).
func (s *Service) Ready(ctx context.Context) error {
	if _, err := s.store.CountActiveTokens(ctx); err != nil {
		return err
	}
	return keyGuard{Store: s.store, kr: s.keyring}.current(ctx)
}

// Keyring returns the service's keyring (the server derives its session key
// from it).
func (s *Service) Keyring() *secret.Keyring { return s.keyring }

// keyCheckMeta names the sealed value that proves the master key matches
// the store.
const keyCheckMeta = "key_check"

// ErrWrongMasterKey means the master key is not the one the store's
// secrets were sealed with.
var ErrWrongMasterKey = errors.New("the master key does not match this store: its secrets were sealed with another key. " +
	"Use the key the store was created with (PGRELAY_MASTER_KEY, PGRELAY_MASTER_KEY_FILE, or master.key in the data dir), " +
	"or the new key after `pgrelay master-key rotate`; every process sharing a store needs the same key")

// CheckMasterKey verifies that the keyring opens the store's key check
// value, creating it on a new store.
func (s *Service) CheckMasterKey(ctx context.Context) error {
	ad := []byte("pgrelay/meta/" + keyCheckMeta)
	sealed, err := s.keyring.Seal([]byte("pgrelay key check v1"), ad)
	if err != nil {
		return err
	}
	stored, err := s.store.PutMetaIfAbsent(ctx, keyCheckMeta, sealed)
	if err != nil {
		return fmt.Errorf("check master key: %w", err)
	}
	if _, err := s.keyring.Open(stored, ad); err != nil {
		return ErrWrongMasterKey
	}
	return nil
}
