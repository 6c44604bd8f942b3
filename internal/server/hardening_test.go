package server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/server"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// start serves cfg on 127.0.0.1 (plain HTTP unless cfg has a certificate)
// and returns the server and its address; it stops when the test ends.
func start(t *testing.T, cfg server.Config) (*server.Server, string) {
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
		case <-time.After(30 * time.Second):
			t.Error("the server did not stop within 30s")
		}
	})
	return srv, ln.Addr().String()
}

// get sends a request and returns its status, body and headers.
func get(t *testing.T, method, url, bearer string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

// TestMetricsMethodLabel: requests with made-up methods, which anyone can
// send without credentials, are counted under method="OTHER" and create
// no series of their own.
func TestMetricsMethodLabel(t *testing.T) {
	t.Parallel()
	_, addr := start(t, server.Config{})
	for i := range 20 {
		method := fmt.Sprintf("MADEUP%d", i)
		for _, path := range []string{"/healthz", "/api/v1/connections", "/nowhere"} {
			get(t, method, "http://"+addr+path, "")
		}
	}
	get(t, http.MethodDelete, "http://"+addr+"/healthz", "")
	get(t, http.MethodGet, "http://"+addr+"/healthz", "")
	_, body, _ := get(t, http.MethodGet, "http://"+addr+"/metrics", "")
	if strings.Contains(body, "MADEUP") {
		t.Fatalf("/metrics has series for made-up methods:\n%s", grepLines(body, "MADEUP"))
	}
	for _, want := range []string{`method="OTHER"`, `method="DELETE"`, `method="GET"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics has no %s series:\n%s", want, grepLines(body, "pgrelay_http_requests_total"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMetricsAddrAndToken: with a metrics address, /metrics is served
// there and not on the main listener; with a token, a scrape without it or
// with a wrong one gets 401 (with WWW-Authenticate), and the token is
// never logged.
func TestMetricsAddrAndToken(t *testing.T) {
	t.Parallel()
	const token = "metrics-token-9f2c61d0a7"
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, addr := start(t, server.Config{MetricsAddr: "127.0.0.1:0", MetricsToken: secret.New(token), Logger: logger,
		Metrics: metrics.New()})
	if srv.MetricsAddr() == nil {
		t.Fatal("no metrics listener")
	}
	maddr := srv.MetricsAddr().String()
	if st, body, _ := get(t, http.MethodGet, "http://"+addr+"/metrics", token); st != http.StatusNotFound || strings.Contains(body, "pgrelay_") {
		t.Fatalf("/metrics on the main listener: %d, want 404", st)
	}
	for name, bearer := range map[string]string{"no token": "", "a wrong token": "metrics-token-wrong", "the API token shape": "pgr_x"} {
		st, body, h := get(t, http.MethodGet, "http://"+maddr+"/metrics", bearer)
		if st != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") || strings.Contains(body, "pgrelay_") {
			t.Fatalf("/metrics with %s: %d %q, want 401 with WWW-Authenticate", name, st, body)
		}
	}
	st, body, _ := get(t, http.MethodGet, "http://"+maddr+"/metrics", token)
	if st != http.StatusOK || !strings.Contains(body, "pgrelay_http_requests_total") {
		t.Fatalf("/metrics with the token: %d", st)
	}
	if st, _, _ := get(t, http.MethodGet, "http://"+addr+"/healthz", ""); st != http.StatusOK {
		t.Fatalf("/healthz on the main listener: %d", st)
	}
	if strings.Contains(logs.String(), token) {
		t.Fatal("the metrics token is in the log")
	}

	// A token without a separate address guards /metrics on the main
	// listener.
	_, addr = start(t, server.Config{MetricsToken: secret.New(token)})
	if st, _, _ := get(t, http.MethodGet, "http://"+addr+"/metrics", ""); st != http.StatusUnauthorized {
		t.Fatalf("/metrics on the main listener without the token: %d, want 401", st)
	}
	if st, _, _ := get(t, http.MethodGet, "http://"+addr+"/metrics", token); st != http.StatusOK {
		t.Fatalf("/metrics on the main listener with the token: %d, want 200", st)
	}
}

// bodyFace has a route that reads the request body and reports how the
// read ended, one that waits before answering, and one that writes a large
// response.
type bodyFace struct {
	readErr chan error
	entered chan struct{}
	release chan struct{}
	wrote   chan error
}

func newBodyFace() *bodyFace {
	return &bodyFace{readErr: make(chan error, 10), entered: make(chan struct{}, 10), release: make(chan struct{}), wrote: make(chan error, 10)}
}

func (f *bodyFace) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		f.readErr <- err
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "read")
	})
	mux.HandleFunc("/wait", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		f.entered <- struct{}{}
		select {
		case <-f.release:
		case <-r.Context().Done():
			http.Error(w, "request context ended", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "done")
	})
	mux.HandleFunc("GET /large", func(w http.ResponseWriter, _ *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		var err error
		for i := 0; i < 1024 && err == nil; i++ {
			_, err = w.Write(chunk)
		}
		f.wrote <- err
	})
}

// TestSlowBodyIsCutOff: a client that trickles a request body is cut off
// after the body timeout (the handler's read fails and the connection
// closes), long before its body would be complete; a request whose body
// arrived, and one without a body, may take longer than the body timeout.
func TestSlowBodyIsCutOff(t *testing.T) {
	t.Parallel()
	face := newBodyFace()
	const bodyTimeout = 500 * time.Millisecond
	_, addr := start(t, server.Config{Faces: []server.Registrar{face}, BodyTimeout: bodyTimeout})

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// 1000 bytes at one per 50 ms would take 50 s.
	if _, err := io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	began := time.Now()
	select {
	case err := <-face.readErr:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("the handler's body read ended with %v, want a timeout", err)
		}
		if d := time.Since(began); d > 10*bodyTimeout {
			t.Fatalf("the trickling body was cut off after %v, want about %v", d, bodyTimeout)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a body trickled for 10s is still being read")
	}
	// The server closes the connection (with a reset, as the client's
	// bytes were left unread).
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the connection of the trickled body: %v, want it closed by the server", err)
	}

	// A body that arrived in time, then a handler that takes longer than
	// the body timeout; and the same without a body.
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		done := make(chan string, 1)
		go func() {
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader(`{"small": true}`)
			}
			req, _ := http.NewRequest(method, "http://"+addr+"/wait", body)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				done <- err.Error()
				return
			}
			b, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			done <- fmt.Sprintf("%d %s", res.StatusCode, b)
		}()
		<-face.entered
		// Wait past the body timeout with the handler running (the
		// condition: the request must outlive it).
		time.Sleep(3 * bodyTimeout)
		face.release <- struct{}{}
		if got := <-done; got != "200 done" {
			t.Fatalf("%s with a handler longer than the body timeout: %s, want 200 done", method, got)
		}
	}
}

// TestUnreadResponseIsCutOff: a client that does not read a large response
// holds the connection only until the write timeout.
func TestUnreadResponseIsCutOff(t *testing.T) {
	t.Parallel()
	face := newBodyFace()
	_, addr := start(t, server.Config{Faces: []server.Registrar{face}, WriteTimeout: 500 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /large HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-face.wrote:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("writing to a client that reads nothing ended with %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the response to a client that reads nothing is still being written after 10s")
	}
}

// TestMaxConnections: with --max-connections 2, a third connection is not
// served while two are open, and is served as soon as one closes.
func TestMaxConnections(t *testing.T) {
	t.Parallel()
	face := newBodyFace()
	_, addr := start(t, server.Config{Faces: []server.Registrar{face}, MaxConnections: 2})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-face.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("a connection below the limit was not served")
		}
		held = append(held, c)
	}
	third, err := net.Dial("tcp", addr) // the kernel's backlog takes it
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if _, err := io.WriteString(third, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Not served while two connections are open.
	_ = third.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := third.Read(make([]byte, 1)); n > 0 || !isTimeout(err) {
		t.Fatalf("the third connection was answered (%d bytes, %v) while two were open", n, err)
	}
	// One handler ends and its client hangs up: the third is served.
	face.release <- struct{}{}
	_ = held[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(held[0]).ReadString('\n'); err != nil || !strings.Contains(line, "200") {
		t.Fatalf("the first connection's answer: %q %v", line, err)
	}
	_ = held[0].Close()
	_ = third.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(third).ReadString('\n')
	if err != nil || !strings.Contains(line, "200") {
		t.Fatalf("the third connection after one closed: %q %v, want 200", line, err)
	}
	face.release <- struct{}{}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestHSTS: Strict-Transport-Security is sent over HTTPS, over plain HTTP
// only when asked (behind a TLS-terminating proxy), and not otherwise.
func TestHSTS(t *testing.T) {
	t.Parallel()
	_, addr := start(t, server.Config{})
	if _, _, h := get(t, http.MethodGet, "http://"+addr+"/healthz", ""); h.Get("Strict-Transport-Security") != "" {
		t.Fatalf("plain HTTP sends HSTS: %q", h.Get("Strict-Transport-Security"))
	}
	_, addr = start(t, server.Config{HSTS: true})
	if _, _, h := get(t, http.MethodGet, "http://"+addr+"/healthz", ""); h.Get("Strict-Transport-Security") != server.HSTSValue {
		t.Fatalf("HSTS behind a TLS proxy: %q, want %q", h.Get("Strict-Transport-Security"), server.HSTSValue)
	}
}
