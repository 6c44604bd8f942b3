package cli_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/cli"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

var (
	servingRE = regexp.MustCompile(`serving the web UI and API on (\S+) `)
	tokenRE   = regexp.MustCompile(`\b` + auth.TokenPrefix + `[A-Za-z0-9_-]{43}\b`)
	csrfRE    = regexp.MustCompile(`name="` + auth.CSRFField + `" value="([^"]+)"`)
)

// TestServeTLS runs `pgrelay serve --tls-cert --tls-key` in-process on a
// free port: it serves HTTPS (/healthz, the API with the admin token it
// prints, the web UI), refuses plain HTTP on that port, gives the UI's
// cookies the Secure flag, and stops cleanly when its context ends.
func TestServeTLS(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	cert := testenv.NewTLSCert(t)

	var stdout, stderr testenv.LogBuffer
	env := cli.Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
		Getenv: func(k string) string {
			if k == "PGRELAY_DATA_DIR" {
				return dataDir
			}
			return ""
		},
		StdinIsTerminal: func() bool { return false }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- cli.Execute(ctx, env, []string{"--log-level", "info", "serve", "--listen", "127.0.0.1:0", "--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile})
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("serve exited %d\nstderr:\n%s", code, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("serve did not stop within 30s of its context ending\nstderr:\n%s", stderr.String())
		}
	}
	t.Cleanup(stop)

	var base, token string
	deadline := time.Now().Add(30 * time.Second)
	for base == "" || token == "" {
		select {
		case code := <-done:
			stopped = true
			t.Fatalf("serve exited %d before serving\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve printed no URL and token within 30s\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		out := stdout.String()
		if m := servingRE.FindStringSubmatch(out); m != nil {
			base = m[1]
		}
		token = tokenRE.FindString(out)
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.HasPrefix(base, "https://127.0.0.1:") {
		t.Fatalf("serve announces %s, want https://127.0.0.1:PORT", base)
	}

	hc := &http.Client{Timeout: 10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cert.Pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path, bearer string, form url.Values, cookies ...*http.Cookie) (*http.Response, string) {
		t.Helper()
		var body io.Reader
		if form != nil {
			body = strings.NewReader(form.Encode())
		}
		req, err := http.NewRequest(method, base+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if form != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		for _, c := range cookies {
			req.AddCookie(c)
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}

	t.Run("HealthAndAPI", func(t *testing.T) {
		if res, body := do(http.MethodGet, "/healthz", "", nil); res.StatusCode != http.StatusOK || body != "ok\n" {
			t.Errorf("GET /healthz: %d %q", res.StatusCode, body)
		}
		res, body := do(http.MethodGet, "/api/v1/whoami", token, nil)
		var who struct{ Role string }
		if err := json.Unmarshal([]byte(body), &who); res.StatusCode != http.StatusOK || err != nil || who.Role != "admin" {
			t.Errorf("GET /api/v1/whoami: %d %s", res.StatusCode, body)
		}
		if res.TLS == nil {
			t.Error("the API answered without TLS")
		}
		if res, body := do(http.MethodGet, "/api/v1/connections", "", nil); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET /api/v1/connections without a token: %d %s", res.StatusCode, body)
		}
	})

	t.Run("PlainHTTPRefused", func(t *testing.T) {
		plain := "http://" + strings.TrimPrefix(base, "https://")
		res, err := (&http.Client{Timeout: 10 * time.Second}).Get(plain + "/healthz")
		if err != nil {
			return
		}
		b, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || string(b) == "ok\n" {
			t.Errorf("plain HTTP to the TLS port: %d %q, want 400", res.StatusCode, b)
		}
	})

	t.Run("SecureCookies", func(t *testing.T) {
		res, body := do(http.MethodGet, "/login", "", nil)
		m := csrfRE.FindStringSubmatch(body)
		if res.StatusCode != http.StatusOK || m == nil {
			t.Fatalf("GET /login: %d, CSRF field found: %v", res.StatusCode, m != nil)
		}
		var nonce *http.Cookie
		for _, c := range res.Cookies() {
			nonce = c
			if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
				t.Errorf("sign-in cookie %s: Secure=%v HttpOnly=%v SameSite=%v", c.Name, c.Secure, c.HttpOnly, c.SameSite)
			}
		}
		if nonce == nil {
			t.Fatal("GET /login set no cookie")
		}
		res, body = do(http.MethodPost, "/login", "", url.Values{auth.CSRFField: {m[1]}, "token": {token}}, nonce)
		if res.StatusCode != http.StatusSeeOther {
			t.Fatalf("POST /login: %d\n%s", res.StatusCode, body)
		}
		var session *http.Cookie
		for _, c := range res.Cookies() {
			if c.Name == auth.SessionCookie {
				session = c
			}
		}
		if session == nil || session.Value == "" {
			t.Fatalf("sign-in set no session cookie: %v", res.Header["Set-Cookie"])
		}
		if !session.Secure || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode {
			t.Errorf("session cookie over HTTPS: Secure=%v HttpOnly=%v SameSite=%v; want all set (Strict)",
				session.Secure, session.HttpOnly, session.SameSite)
		}
		// The cookie works on the UI and on the API.
		if res, _ := do(http.MethodGet, "/connections", "", nil, session); res.StatusCode != http.StatusOK {
			t.Errorf("GET /connections with the session: %d", res.StatusCode)
		}
		if res, body := do(http.MethodGet, "/api/v1/whoami", "", nil, session); res.StatusCode != http.StatusOK {
			t.Errorf("GET /api/v1/whoami with the session: %d %s", res.StatusCode, body)
		}
	})

	stop()
	if logs := stderr.String(); !strings.Contains(logs, "tls=true") {
		t.Errorf("serve did not log tls=true:\n%s", logs)
	}
}
