package client

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/pgrelay/pgrelay/apiwire"
)

// BastionSetupHop returns the shell script that prepares hop (from 1) of
// the connection's chain.
func (c *Client) BastionSetupHop(ctx context.Context, name string, hop int) (string, error) {
	var script string
	u := c.endpoint("connections", name, "bastion-setup") + "?hop=" + strconv.Itoa(hop)
	if err := c.do(ctx, request{method: http.MethodGet, url: u, text: &script, accepted: http.StatusOK}); err != nil {
		return "", err
	}
	return script, nil
}

// HopKeys returns the restricted authorized_keys line of each hop.
func (c *Client) HopKeys(ctx context.Context, name string) ([]apiwire.HopKeyLines, error) {
	var out apiwire.PublicKeyResponse
	u := c.endpoint("connections", name, "public-key") + "?restricted=true"
	if err := c.do(ctx, request{method: http.MethodGet, url: u, out: &out, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return out.Hops, nil
}

// RotateKeyStart starts a key rotation with two live keys; oldLifetime 0
// is the server's default.
func (c *Client) RotateKeyStart(ctx context.Context, name string, oldLifetime time.Duration) (*apiwire.KeyRotation, error) {
	var rot apiwire.KeyRotation
	in := apiwire.KeyRotationRequest{OldKeyLifetime: apiwire.Duration(oldLifetime)}
	if err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("connections", name, "key-rotation"),
		in: in, out: &rot, accepted: http.StatusCreated}); err != nil {
		return nil, err
	}
	return &rot, nil
}

// RotateKeyStatus returns the lines of the rotation under way.
func (c *Client) RotateKeyStatus(ctx context.Context, name string) (*apiwire.KeyRotation, error) {
	var rot apiwire.KeyRotation
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("connections", name, "key-rotation"),
		out: &rot, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &rot, nil
}

// RotateKeyFinish promotes the rotation's new key after checking that every
// hop accepts it.
func (c *Client) RotateKeyFinish(ctx context.Context, name string) (*apiwire.KeyRotation, error) {
	var rot apiwire.KeyRotation
	if err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("connections", name, "key-rotation", "finish"),
		out: &rot, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &rot, nil
}

// RotateKeyCancel drops the rotation's new key.
func (c *Client) RotateKeyCancel(ctx context.Context, name string) (*apiwire.ConnectionView, error) {
	var v apiwire.ConnectionView
	if err := c.do(ctx, request{method: http.MethodDelete, url: c.endpoint("connections", name, "key-rotation"),
		out: &v, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &v, nil
}

// SSHCA returns pgrelay's SSH user CA.
func (c *Client) SSHCA(ctx context.Context) (*apiwire.SSHCAView, error) {
	var v apiwire.SSHCAView
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("ssh-ca"), out: &v, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &v, nil
}

// InitSSHCA creates pgrelay's SSH user CA (admins), allowed to sign
// certificates for the principals given (bastion users) only; without
// any, for any user (as servers before the list do: no body is sent).
func (c *Client) InitSSHCA(ctx context.Context, principals ...string) (*apiwire.SSHCAView, error) {
	req := request{method: http.MethodPost, url: c.endpoint("ssh-ca"), accepted: http.StatusCreated}
	if len(principals) > 0 {
		req.in = apiwire.SSHCAInitRequest{Principals: principals}
	}
	var v apiwire.SSHCAView
	req.out = &v
	if err := c.do(ctx, req); err != nil {
		return nil, err
	}
	return &v, nil
}

// SetSSHCAPrincipals replaces the principals pgrelay's SSH CA may sign
// certificates for, or with in.Any removes the restriction (admins).
func (c *Client) SetSSHCAPrincipals(ctx context.Context, in apiwire.SSHCAPrincipalsRequest) (*apiwire.SSHCAView, error) {
	var v apiwire.SSHCAView
	if err := c.do(ctx, request{method: http.MethodPut, url: c.endpoint("ssh-ca", "principals"), in: in, out: &v,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &v, nil
}
