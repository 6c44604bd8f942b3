// Package client is the Go client of pgrelay's REST API (/api/v1).
//
// It speaks the API's wire types (package apiwire) and depends on nothing
// but them and the standard library, so that programs of other modules can
// use it. API errors come back typed: a validation_failed response is a
// *ValidationError with its fields, a SQL error a *QueryError, every other
// error response an *Error with the server's code and message, whose kind
// errors.Is finds (ErrNotFound, ErrExists, ErrForbidden, ...). The token is sent only in the Authorization header: it is never
// logged nor put in an error.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/pgrelay/pgrelay/apiwire"
)

// Defaults.
const (
	// DefaultTimeout bounds a request other than a query.
	DefaultTimeout = 30 * time.Second
	// DefaultQueryTimeout bounds a query request; the server's own limit
	// is apiwire.DefaultQueryTimeout.
	DefaultQueryTimeout = apiwire.DefaultQueryTimeout + 30*time.Second
	// DefaultUserAgent is sent unless WithUserAgent changes it.
	DefaultUserAgent = "pgrelay-client"
	// maxResponseBytes bounds a response body read into memory.
	maxResponseBytes = 256 << 20
)

// Client calls a pgrelay server's API. It is safe for concurrent use.
type Client struct {
	base         *url.URL
	token        string
	hc           *http.Client
	userAgent    string
	timeout      time.Duration
	queryTimeout time.Duration
	insecureHTTP bool
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient uses hc instead of the client's own (which has connect,
// TLS handshake and idle timeouts). Redirects are never followed whatever
// hc says.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// WithTimeout bounds each request but queries; default DefaultTimeout.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithQueryTimeout bounds each query request; default DefaultQueryTimeout.
func WithQueryTimeout(d time.Duration) Option { return func(c *Client) { c.queryTimeout = d } }

// WithInsecureHTTP lets the client send its token over plain http to a
// host that is not loopback, on a network that protects the traffic itself
// (a service mesh's mutual TLS, a VPN). Without it New refuses such a URL (see
// ErrPlainHTTP). A transport given with WithHTTPClient does not lift the
// refusal: only this option does.
func WithInsecureHTTP() Option { return func(c *Client) { c.insecureHTTP = true } }

// ErrPlainHTTP is the error of New for an http:// URL whose host is not
// loopback: the API token would cross the network unencrypted.
var ErrPlainHTTP = errors.New("plain http to a host that is not loopback")

// New returns a client of the server at baseURL (https, or http to a
// loopback host such as "http://127.0.0.1:8080", optionally with a path
// prefix) that authenticates with token. An http URL to any other host is
// refused with ErrPlainHTTP unless WithInsecureHTTP is given. New sends
// nothing: the first request does.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	token = strings.TrimSpace(token)
	switch {
	case token == "":
		return nil, errors.New("pgrelay client: an API token is required (create one with `pgrelay token create`)")
	case !apiwire.LooksLikeToken(token):
		// Never echo the value: it may be a real secret pasted wrongly.
		return nil, fmt.Errorf("pgrelay client: the API token does not look like a pgrelay token (%s followed by 43 characters)", apiwire.TokenPrefix)
	}
	c := &Client{base: u, token: token, userAgent: DefaultUserAgent, timeout: DefaultTimeout,
		queryTimeout: DefaultQueryTimeout}
	for _, o := range opts {
		o(c)
	}
	if !c.insecureHTTP && SendsInClear(u) {
		return nil, fmt.Errorf("pgrelay client: server URL %s: %w: the API token would cross the network unencrypted; "+
			"accepted is https://, or http:// to 127.0.0.0/8, ::1 or localhost (WithInsecureHTTP allows it knowingly)", u.Redacted(), ErrPlainHTTP)
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: newTransport()}
	}
	hc := *c.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.hc = &hc
	return c, nil
}

// parseBaseURL accepts http(s)://host[:port][/prefix] without credentials,
// query or fragment.
func parseBaseURL(s string) (*url.URL, error) {
	bad := func(why string) error {
		return fmt.Errorf("pgrelay client: server URL %q: %s; accepted is http(s)://HOST[:PORT], e.g. http://127.0.0.1:8080", s, why)
	}
	s = strings.TrimSpace(s)
	if strings.Contains(s, "@") {
		// Do not echo it: it may hold credentials.
		return nil, errors.New("pgrelay client: the server URL must not contain a user or password; pass the API token separately")
	}
	u, err := url.Parse(s)
	switch {
	case s == "":
		return nil, errors.New("pgrelay client: the server URL is empty; accepted is http(s)://HOST[:PORT], e.g. http://127.0.0.1:8080")
	case !strings.Contains(s, "://"):
		return nil, bad("the scheme is missing (write http:// or https:// before the host)")
	case err != nil:
		return nil, bad("not a URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, bad("the scheme must be http or https")
	case u.Host == "" || u.Hostname() == "":
		return nil, bad("the host is missing")
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, bad("a query or fragment is not accepted")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// SendsInClear reports whether requests to u travel unencrypted beyond
// this machine: an http URL whose host is neither "localhost" nor a
// loopback IP address (127.0.0.0/8, ::1). The host is compared as a whole
// and never resolved, so localhost.example.com and 127.0.0.1.nip.io are not
// loopback.
func SendsInClear(u *url.URL) bool {
	if !strings.EqualFold(u.Scheme, "http") {
		return false
	}
	return !isLoopbackHost(u.Hostname())
}

// isLoopbackHost reports whether host (without port or brackets) is
// "localhost" or a loopback IP literal.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

func newTransport() *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          10,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// BaseURL returns the server's URL.
func (c *Client) BaseURL() string { return c.base.String() }

// endpoint returns the URL of an API path made of segments, each escaped.
func (c *Client) endpoint(segments ...string) string {
	var b strings.Builder
	b.WriteString(c.base.String())
	b.WriteString(apiwire.Prefix)
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// request is one API call.
type request struct {
	method   string
	url      string
	in       any     // JSON body, or nil
	raw      []byte  // body of rawType, when in is nil
	rawType  string  // Content-Type of raw
	out      any     // JSON response target, or nil
	text     *string // text response target, or nil
	timeout  time.Duration
	accepted int // the success status
	// created, when set, makes 201 Created a success too and reports it.
	created *bool
}

// do runs a request and decodes its response or its error.
func (c *Client) do(ctx context.Context, rq request) error {
	op := rq.method + " " + strings.TrimPrefix(rq.url, c.base.String())
	timeout := rq.timeout
	if timeout == 0 {
		timeout = c.timeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	var body io.Reader
	if rq.in != nil {
		b, err := json.Marshal(rq.in)
		if err != nil {
			return fmt.Errorf("%s: encode request: %w", op, err)
		}
		body = bytes.NewReader(b)
	} else if rq.raw != nil {
		body = bytes.NewReader(rq.raw)
	}
	req, err := http.NewRequestWithContext(ctx, rq.method, rq.url, body)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", c.userAgent)
	if rq.text != nil {
		req.Header.Set("Accept", "text/plain, application/json")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	if rq.in != nil {
		req.Header.Set("Content-Type", "application/json")
	} else if rq.raw != nil {
		req.Header.Set("Content-Type", rq.rawType)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// *url.Error names the URL, which holds no secret; the token is
		// only in a header.
		return fmt.Errorf("%s on pgrelay server %s: %w", op, c.base.Host, unwrapURLError(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%s: read response: %w", op, err)
	}
	if len(data) > maxResponseBytes {
		return fmt.Errorf("%s: response is larger than %d bytes", op, maxResponseBytes)
	}
	switch {
	case resp.StatusCode == rq.accepted:
	case rq.created != nil && resp.StatusCode == http.StatusCreated:
		*rq.created = true
	default:
		return c.responseError(op, resp, data)
	}
	switch {
	case rq.text != nil:
		*rq.text = string(data)
	case rq.out != nil:
		if !isJSON(resp.Header.Get("Content-Type")) {
			return fmt.Errorf("%s: the server answered %s instead of JSON: is %s a pgrelay server?", op,
				resp.Header.Get("Content-Type"), c.base)
		}
		if err := json.Unmarshal(data, rq.out); err != nil {
			return fmt.Errorf("%s: decode response: %w", op, err)
		}
	}
	return nil
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}
