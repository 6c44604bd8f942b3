package cli

import (
	"context"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/grants"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// backend is the set of use cases the CLI calls. *app.Service provides it
// locally (on the data dir); the API client provides it remotely (with
// --server), so both modes run the same code path per use case.
type backend interface {
	CreateConnection(ctx context.Context, spec connection.Spec) (*app.ConnectionView, error)
	GetConnection(ctx context.Context, name string) (*app.ConnectionView, error)
	ListConnections(ctx context.Context) ([]*app.ConnectionView, error)
	UpdateConnection(ctx context.Context, name string, spec connection.Spec, password *secret.Value) (*app.ConnectionView, error)
	DeleteConnection(ctx context.Context, name string) error
	PublicKey(ctx context.Context, name string, restricted bool) (string, error)
	BastionSetup(ctx context.Context, name string) (string, error)
	RotateKey(ctx context.Context, name string) (*app.KeyRotation, error)
	TrustHostKey(ctx context.Context, name, fingerprint string) (*app.ConnectionView, error)
	Query(ctx context.Context, name, sql string, sink app.ResultSink) error
	TestConnection(ctx context.Context, name string, progress func(diagnose.Step)) (*diagnose.Report, error)
	Grants(ctx context.Context, name string, req grants.Request) (*grants.Result, error)

	CreateToken(ctx context.Context, name string, role auth.Role) (*app.NewToken, error)
	ListTokens(ctx context.Context) ([]app.TokenView, error)
	RevokeToken(ctx context.Context, idOrName string) (*app.TokenView, error)

	sshBackend
}

var (
	_ backend = (*app.Service)(nil)
	_ backend = (*remote.Client)(nil)
)
