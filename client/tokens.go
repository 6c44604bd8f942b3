package client

import (
	"context"
	"net/http"

	"github.com/pgrelay/pgrelay/apiwire"
)

// CreateToken creates an API token with a role (admin only). The token is
// in the result and nowhere else.
func (c *Client) CreateToken(ctx context.Context, name string, role string) (*apiwire.NewToken, error) {
	var nt apiwire.NewToken
	if err := c.do(ctx, request{method: http.MethodPost, url: c.endpoint("tokens"),
		in: apiwire.TokenCreateRequest{Name: name, Role: role}, out: &nt, accepted: http.StatusCreated}); err != nil {
		return nil, err
	}
	return &nt, nil
}

// ListTokens lists every token, revoked ones too (admin only).
func (c *Client) ListTokens(ctx context.Context) ([]apiwire.TokenView, error) {
	var l apiwire.TokenList
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("tokens"), out: &l,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return l.Tokens, nil
}

// RevokeToken revokes a token by ID or by the name of an active token
// (admin only).
func (c *Client) RevokeToken(ctx context.Context, idOrName string) (*apiwire.TokenView, error) {
	var tv apiwire.TokenView
	if err := c.do(ctx, request{method: http.MethodDelete, url: c.endpoint("tokens", idOrName), out: &tv,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &tv, nil
}

// WhoAmI returns the principal the client's token acts as.
func (c *Client) WhoAmI(ctx context.Context) (*apiwire.WhoAmI, error) {
	var w apiwire.WhoAmI
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("whoami"), out: &w,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return &w, nil
}

// OpenAPI returns the server's OpenAPI document.
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	var doc string
	if err := c.do(ctx, request{method: http.MethodGet, url: c.endpoint("openapi.json"), text: &doc,
		accepted: http.StatusOK}); err != nil {
		return nil, err
	}
	return []byte(doc), nil
}
