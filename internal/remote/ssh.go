package remote

import (
	"context"
	"time"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/internal/app"
)

// BastionSetupHop returns the shell script that prepares hop (from 1) of
// the connection's chain.
func (r *Client) BastionSetupHop(ctx context.Context, name string, hop int) (string, error) {
	s, err := r.c.BastionSetupHop(ctx, name, hop)
	return s, domainError(err)
}

// HopKeys returns the restricted authorized_keys line of each hop.
func (r *Client) HopKeys(ctx context.Context, name string) ([]app.HopKeyLines, error) {
	v, err := r.c.HopKeys(ctx, name)
	return result[[]app.HopKeyLines](v, err)
}

// RotateKeyStart starts a key rotation with two live keys.
func (r *Client) RotateKeyStart(ctx context.Context, name string, oldLifetime time.Duration) (*app.KeyRotation, error) {
	v, err := r.c.RotateKeyStart(ctx, name, oldLifetime)
	return result[*app.KeyRotation](v, err)
}

// RotateKeyStatus returns the lines of the rotation under way.
func (r *Client) RotateKeyStatus(ctx context.Context, name string) (*app.KeyRotation, error) {
	v, err := r.c.RotateKeyStatus(ctx, name)
	return result[*app.KeyRotation](v, err)
}

// RotateKeyFinish promotes the rotation's new key.
func (r *Client) RotateKeyFinish(ctx context.Context, name string) (*app.KeyRotation, error) {
	v, err := r.c.RotateKeyFinish(ctx, name)
	return result[*app.KeyRotation](v, err)
}

// RotateKeyCancel drops the rotation's new key.
func (r *Client) RotateKeyCancel(ctx context.Context, name string) (*app.ConnectionView, error) {
	v, err := r.c.RotateKeyCancel(ctx, name)
	return result[*app.ConnectionView](v, err)
}

// SSHCA returns pgrelay's SSH user CA.
func (r *Client) SSHCA(ctx context.Context) (*app.SSHCAView, error) {
	v, err := r.c.SSHCA(ctx)
	return result[*app.SSHCAView](v, err)
}

// InitSSHCA creates pgrelay's SSH user CA, allowed to sign for the
// principals given (without any, for any user).
func (r *Client) InitSSHCA(ctx context.Context, principals ...string) (*app.SSHCAView, error) {
	v, err := r.c.InitSSHCA(ctx, principals...)
	return result[*app.SSHCAView](v, err)
}

// SetSSHCAPrincipals replaces the principals pgrelay's SSH CA may sign
// for, or removes the restriction (p.Any).
func (r *Client) SetSSHCAPrincipals(ctx context.Context, p app.SSHCAPrincipals) (*app.SSHCAView, error) {
	v, err := r.c.SetSSHCAPrincipals(ctx, apiwire.SSHCAPrincipalsRequest{Principals: p.Principals, Any: p.Any})
	return result[*app.SSHCAView](v, err)
}
