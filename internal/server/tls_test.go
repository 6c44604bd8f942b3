package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/server"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// faceFunc is a Registrar made of a function.
type faceFunc func(mux *http.ServeMux)

func (f faceFunc) Register(mux *http.ServeMux) { f(mux) }

// serveTLS starts a server with cfg on 127.0.0.1 and returns its address;
// the server stops (and must stop cleanly) when the test ends.
func serveTLS(t *testing.T, cfg server.Config) string {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := srv.Listen(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the server did not stop within 10s")
		}
	})
	return ln.Addr().String()
}

// TestTLS serves HTTPS with a certificate from files, as `pgrelay serve
// --tls-cert --tls-key` does: a client that trusts the CA gets /healthz and
// a route of a face; a client that does not, one that offers only TLS 1.1,
// and plain HTTP get nothing.
func TestTLS(t *testing.T) {
	t.Parallel()
	cert := testenv.NewTLSCert(t)
	face := faceFunc(func(mux *http.ServeMux) {
		mux.HandleFunc("GET /api/v1/ping", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "pong") })
	})
	cfg := server.Config{TLSCertFile: cert.CertFile, TLSKeyFile: cert.KeyFile, Faces: []server.Registrar{face}}
	if srv, err := server.New(cfg); err != nil || !srv.TLS() {
		t.Fatalf("New with a certificate: TLS() = %v, %v", srv != nil && srv.TLS(), err)
	}
	addr := serveTLS(t, cfg)

	trusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: cert.Pool}}}
	for path, want := range map[string]string{"/healthz": "ok\n", "/api/v1/ping": "pong"} {
		res, err := trusting.Get("https://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s over HTTPS: %v", path, err)
		}
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("GET %s: %d %q, want 200 %q", path, res.StatusCode, body, want)
		}
		if res.TLS == nil || res.TLS.Version < tls.VersionTLS12 {
			t.Errorf("GET %s: TLS state %+v, want TLS 1.2 or later", path, res.TLS)
		}
		if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: the server's headers are missing over HTTPS (nosniff = %q)", path, got)
		}
		if got := res.Header.Get("Strict-Transport-Security"); !strings.HasPrefix(got, "max-age=") {
			t.Errorf("GET %s over HTTPS: Strict-Transport-Security = %q, want max-age=...", path, got)
		}
	}

	// A client that does not trust the CA refuses the certificate.
	_, err := (&http.Client{Timeout: 10 * time.Second}).Get("https://" + addr + "/healthz")
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ua) {
		t.Errorf("GET without the CA: %v, want an unknown authority error", err)
	}

	// TLS 1.1 and older are refused.
	old := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: cert.Pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}}}
	if res, err := old.Get("https://" + addr + "/healthz"); err == nil {
		_ = res.Body.Close()
		t.Errorf("TLS 1.1 accepted: %s", tls.VersionName(res.TLS.Version))
	}

	// Plain HTTP to the TLS port gets no page (Go answers 400).
	res, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/healthz")
	if err == nil {
		body, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || string(body) == "ok\n" {
			t.Errorf("plain HTTP to the TLS port: %d %q, want 400", res.StatusCode, body)
		}
	}
}

// TestTLSConfigErrors checks that a half-given or unreadable certificate
// stops the server with a message that says what to fix.
func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	cert := testenv.NewTLSCert(t)
	for _, cfg := range []server.Config{{TLSCertFile: cert.CertFile}, {TLSKeyFile: cert.KeyFile}} {
		if _, err := server.New(cfg); err == nil || !strings.Contains(err.Error(), "--tls-cert and --tls-key go together") {
			t.Errorf("New(%+v): %v, want the flags to go together", cfg, err)
		}
	}
	// The key of another certificate, and a missing file.
	other := testenv.NewTLSCert(t)
	for name, cfg := range map[string]server.Config{
		"mismatched key": {TLSCertFile: cert.CertFile, TLSKeyFile: other.KeyFile},
		"missing file":   {TLSCertFile: filepath.Join(t.TempDir(), "nope.pem"), TLSKeyFile: cert.KeyFile},
	} {
		cfg.Addr = "127.0.0.1:0"
		srv, err := server.New(cfg)
		if err != nil {
			t.Fatalf("%s: New: %v", name, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ln, err := srv.Listen(ctx)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		err = srv.Serve(ctx, ln)
		cancel()
		_ = ln.Close()
		if err == nil || !strings.Contains(err.Error(), "load TLS certificate") {
			t.Errorf("%s: Serve: %v, want a certificate error", name, err)
		}
	}
}
