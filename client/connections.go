package client

import (
	"context"
	"net/http"

	"github.com/pgrelay/pgrelay/apiwire"
)

// CreateConnection saves a new connection (with in.Password, if set).
// With a tunnel, the returned view carries the public key to install on
// the bastion.
func (c *Client) CreateConnection(ctx context.Context, in apiwire.ConnectionInput) (*apiwire.ConnectionView, error) {
	var v apiwire.ConnectionView
	err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("connections"),
		in: in, out: &v, accepted: http.StatusCreated})
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// GetConnection returns a connection's view.
func (c *Client) GetConnection(ctx context.Context, name string) (*apiwire.ConnectionView, error) {
	var v apiwire.ConnectionView
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("connections", name), out: &v,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &v, nil
}

// ListConnections returns every connection's view, ordered by name.
func (c *Client) ListConnections(ctx context.Context) ([]*apiwire.ConnectionView, error) {
	var l apiwire.ConnectionList
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("connections"), out: &l,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return l.Connections, nil
}

// UpdateConnection replaces the connection's settings with in. A nil
// in.Password keeps the stored one.
func (c *Client) UpdateConnection(ctx context.Context, name string, in apiwire.ConnectionInput) (*apiwire.ConnectionView, error) {
	var v apiwire.ConnectionView
	if err := c.do(ctx, request{method: http.MethodPut, url: c.endpoint("connections", name),
		in: in, out: &v, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &v, nil
}

// DeleteConnection removes a connection and its keys.
func (c *Client) DeleteConnection(ctx context.Context, name string) error {
	return c.do(ctx, request{method: http.MethodDelete, url: c.endpoint("connections", name),
		accepted: http.StatusNoContent})
}

// PublicKey returns the authorized_keys line of a connection's tunnel key;
// restricted prefixes options that allow only forwarding to the database.
func (c *Client) PublicKey(ctx context.Context, name string, restricted bool) (string, error) {
	u := c.endpoint("connections", name, "public-key")
	if restricted {
		u += "?restricted=true"
	}
	var out apiwire.PublicKeyResponse
	if err := c.do(ctx, request{method: http.MethodGet, url: u, out: &out, accepted: http.StatusOK}); err != nil {
		return "", err
	}
	return out.PublicKey, nil
}

// BastionSetup returns the shell script that prepares the bastion.
func (c *Client) BastionSetup(ctx context.Context, name string) (string, error) {
	var script string
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("connections", name, "bastion-setup"),
		text: &script, accepted: http.StatusOK}); err != nil {
		return "", err
	}
	return script, nil
}

// RotateKey replaces a connection's tunnel key pair.
func (c *Client) RotateKey(ctx context.Context, name string) (*apiwire.KeyRotation, error) {
	var rot apiwire.KeyRotation
	if err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("connections", name, "rotate-key"),
		out: &rot, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &rot, nil
}

// TrustHostKey approves the pending bastion host key with the given
// fingerprint.
func (c *Client) TrustHostKey(ctx context.Context, name, fingerprint string) (*apiwire.ConnectionView, error) {
	var v apiwire.ConnectionView
	if err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("connections", name, "trust-host-key"),
		in: apiwire.TrustHostKeyRequest{Fingerprint: fingerprint}, out: &v, accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &v, nil
}
