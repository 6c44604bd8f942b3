package credential

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// DefaultHTTPTimeout bounds each HTTP request of a source.
const DefaultHTTPTimeout = 30 * time.Second

// maxResponse bounds the bodies read from APIs.
const maxResponse = 1 << 20

// errRedirect marks a refused redirect.
var errRedirect = errors.New("redirect refused")

// httpClient returns a copy of base (default: http.DefaultTransport) that
// follows no redirects, bounds each request, and records the transport
// error of the last failed request in rec, so that errors of libraries
// that flatten them (x/oauth2's jwt) can still be classified.
func httpClient(base *http.Client, rec *transportRecorder) *http.Client {
	c := &http.Client{}
	if base != nil {
		*c = *base
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultHTTPTimeout
	}
	rt := c.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	rec.rt = rt
	c.Transport = rec
	// Credentials are never sent on to where a redirect points.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return errRedirect }
	return c
}

// NetworkClient returns a copy of base (default: http.DefaultTransport's
// settings) whose connections are dialled under policy: the address a
// workspace URL or a key's token_uri resolves to is checked when it is
// dialled, after the lookup, so that no name can lead a fetch to an
// address the policy denies (a refusal is an [*egress.DeniedError], which
// a fetch reports as a [*NetworkDeniedError]). Through an HTTPS proxy
// (HTTPS_PROXY) the proxy's address is checked at the dial and the
// endpoint's host only when it is an IP literal: the proxy resolves
// names. A base whose Transport is not an *http.Transport is returned as
// it is.
func NetworkClient(base *http.Client, policy *egress.Policy) *http.Client {
	c := &http.Client{}
	if base != nil {
		*c = *base
	}
	rt := c.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	t, ok := rt.(*http.Transport)
	if !ok {
		return c
	}
	t = t.Clone()
	t.DialContext = policy.DialStd
	// A TLS dial function of its own would dial around the policy
	// (DialContext takes priority over the deprecated Dial).
	t.DialTLSContext, t.DialTLS = nil, nil
	c.Transport = &policyTransport{rt: t, policy: policy, proxy: t.Proxy}
	return c
}

// policyTransport checks the endpoint's host of a request sent through a
// proxy, when it is an IP literal (the dial only sees the proxy).
type policyTransport struct {
	rt     http.RoundTripper
	policy *egress.Policy
	proxy  func(*http.Request) (*url.URL, error)
}

// RoundTrip implements http.RoundTripper.
func (p *policyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if p.proxy != nil {
		if u, err := p.proxy(req); err == nil && u != nil {
			port := req.URL.Port()
			if port == "" {
				port = "443"
				if req.URL.Scheme == "http" {
					port = "80"
				}
			}
			if err := p.policy.CheckHostPort(net.JoinHostPort(req.URL.Hostname(), port)); err != nil {
				if req.Body != nil {
					_ = req.Body.Close()
				}
				return nil, err
			}
		}
	}
	return p.rt.RoundTrip(req)
}

// transportRecorder is a RoundTripper for the requests of one fetch: it
// binds them to the fetch's context (x/oauth2's jwt posts without one),
// and remembers the last transport error and redirect response.
type transportRecorder struct {
	ctx      context.Context
	rt       http.RoundTripper
	mu       sync.Mutex
	err      error
	redirect int
}

// RoundTrip implements http.RoundTripper.
func (r *transportRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if r.ctx != nil {
		req = req.WithContext(r.ctx)
	}
	resp, err := r.rt.RoundTrip(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
	r.redirect = 0
	if err == nil && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		r.redirect = resp.StatusCode
	}
	return resp, err
}

// last returns the transport error and redirect status of the last request.
func (r *transportRecorder) last() (error, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err, r.redirect
}

// databricksError is the error body of the Databricks REST API.
type databricksError struct {
	ErrorCode string `json:"error_code"`
	Message   string `json:"message"`
	// OAuth-style fields, used by some gateways.
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// postJSON posts body as JSON with a bearer token and decodes a 2xx
// answer into out; other answers become typed errors.
func postJSON(ctx context.Context, c *http.Client, rec *transportRecorder, kind connection.AuthKind, endpoint string,
	bearer secret.Value, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("%s credential: encode request: %w", kind, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(b))
	if err != nil {
		return &ConfigError{Kind: kind, Field: "auth.workspace_url", Problem: "not a usable URL"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "pgrelay")
	req.Header.Set("Authorization", "Bearer "+bearer.Reveal())
	resp, err := c.Do(req)
	if err != nil {
		return requestError(ctx, rec, kind, endpoint, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return &UnreachableError{Kind: kind, URL: describeURL(endpoint), Err: fmt.Errorf("read answer: %w", err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e databricksError
		_ = json.Unmarshal(data, &e)
		code, msg := e.ErrorCode, e.Message
		if code == "" {
			code, msg = e.Error, e.Description
		}
		if code == "" && msg == "" && json.Valid(data) {
			msg = "(no error message)"
		}
		return &APIError{Kind: kind, URL: describeURL(endpoint), Status: resp.StatusCode, Code: cleanText(code, 80), Message: cleanText(msg, 300)}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return &MalformedError{Kind: kind, From: "the answer of " + describeURL(endpoint), Problem: "not the JSON object the API documents"}
	}
	return nil
}

// requestError classifies the error of http.Client.Do (or of a library
// that made the request): a refused redirect, a cancelled context, or an
// unreachable endpoint.
func requestError(ctx context.Context, rec *transportRecorder, kind connection.AuthKind, endpoint string, err error) error {
	terr, redirect := rec.last()
	var denied *egress.DeniedError
	switch {
	case errors.As(terr, &denied) || errors.As(err, &denied):
		return &NetworkDeniedError{Kind: kind, Field: urlField(kind), URL: describeURL(endpoint), Err: denied}
	case errors.Is(err, errRedirect) || (terr == nil && redirect != 0):
		if redirect == 0 {
			redirect = http.StatusFound
		}
		return &APIError{Kind: kind, URL: describeURL(endpoint), Status: redirect, Message: "redirected elsewhere"}
	case ctx.Err() != nil:
		return fmt.Errorf("%s credential: request to %s: %w", kind, describeURL(endpoint), context.Cause(ctx))
	case terr != nil:
		return &UnreachableError{Kind: kind, URL: describeURL(endpoint), Err: unwrapURLError(terr)}
	}
	return &UnreachableError{Kind: kind, URL: describeURL(endpoint), Err: unwrapURLError(err)}
}

// unwrapURLError drops *url.Error's repetition of method and URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
