// Package server runs pgrelay's HTTP service: it mounts the REST API and the
// web UI next to /healthz, /readyz and /metrics (or serves /metrics on a
// listener of its own, optionally behind a bearer token), wraps every
// request with a request ID, security headers, body and write deadlines,
// an access log line and metrics, bounds the connections it serves at
// once, and shuts down gracefully.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/netutil"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/tracing"
)

// Registrar mounts its routes on a mux (the API, the web UI).
type Registrar interface {
	Register(mux *http.ServeMux)
}

// Config configures a Server.
type Config struct {
	// Addr is the listen address; default 127.0.0.1:8080.
	Addr string
	// TLSCertFile and TLSKeyFile enable HTTPS when both are set.
	TLSCertFile, TLSKeyFile string
	// Faces are mounted in order (API, UI).
	Faces []Registrar
	// Ready reports whether the service can serve (store reachable).
	Ready   func(ctx context.Context) error
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// ShutdownTimeout bounds the graceful shutdown; default 20s.
	ShutdownTimeout time.Duration
	// MetricsAddr, when set, is the listen address of /metrics, which is
	// then served there only (not on Addr), with the same TLS.
	MetricsAddr string
	// MetricsToken, when set, is the bearer token /metrics requires
	// (Authorization: Bearer ..., as Prometheus sends it).
	MetricsToken secret.Value
	// MaxConnections bounds the connections each listener serves at once;
	// more wait in the listen backlog until one closes. 0 is unlimited.
	MaxConnections int
	// BodyTimeout bounds reading a request's body; default
	// DefaultBodyTimeout.
	BodyTimeout time.Duration
	// WriteTimeout bounds writing a response, from its first byte; default
	// DefaultWriteTimeout. Event streams set a deadline per write instead.
	WriteTimeout time.Duration
	// HSTS sends Strict-Transport-Security over plain HTTP too: set it
	// when a TLS-terminating proxy serves the server over HTTPS. It is
	// always sent when the server itself serves HTTPS.
	HSTS bool
	// TracerProvider, when set, traces each request (see traceRequest);
	// nil is off.
	TracerProvider trace.TracerProvider
}

// Defaults of Config.
const (
	// DefaultBodyTimeout bounds reading a request body (at most 1 MiB for
	// the API and the web UI), so that a client that trickles one cannot
	// hold a connection.
	DefaultBodyTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds writing a response, from its first byte,
	// so that a client that does not read cannot hold a connection.
	DefaultWriteTimeout = 2 * time.Minute
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout = 10 * time.Second
	// HSTSValue is the Strict-Transport-Security header sent over HTTPS:
	// browsers use only HTTPS for this host for a year.
	HSTSValue = "max-age=31536000"
)

// Server is pgrelay's HTTP server.
type Server struct {
	cfg     Config
	mux     *http.ServeMux
	handler http.Handler
	// metricsHandler serves the metrics listener (with MetricsAddr).
	metricsHandler http.Handler
	// metricsLn is the metrics listener opened by Listen.
	metricsLn net.Listener
}

// New builds the server and its routes.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:8080"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 20 * time.Second
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if (cfg.TLSCertFile == "") != (cfg.TLSKeyFile == "") {
		return nil, errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	if cfg.MaxConnections < 0 {
		return nil, fmt.Errorf("--max-connections %d: accepted are 0 (no limit) or more", cfg.MaxConnections)
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.readyz)
	metricsH := s.guardMetrics(cfg.Metrics.Handler())
	if cfg.MetricsAddr == "" {
		s.mux.Handle("GET /metrics", metricsH)
	} else {
		mm := http.NewServeMux()
		mm.Handle("GET /metrics", metricsH)
		s.metricsHandler = s.wrap(mm)
	}
	for _, f := range cfg.Faces {
		f.Register(s.mux)
	}
	s.handler = s.wrap(s.mux)
	return s, nil
}

// Handler returns the server's root handler (for tests).
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.cfg.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.cfg.Ready(ctx); err != nil {
			s.cfg.Logger.ErrorContext(r.Context(), "not ready", "error", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
			return
		}
	}
	_, _ = w.Write([]byte("ready\n"))
}

// statusWriter records the status code of a response, and sets the
// response's write deadline when it starts.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	// writeTimeout bounds writing the response from its first byte.
	writeTimeout time.Duration
}

// start records the status of a response that starts, and gives its
// writing writeTimeout (a stream replaces it with a deadline per write).
func (w *statusWriter) start(code int) {
	if w.status != 0 {
		return
	}
	w.status = code
	_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.writeTimeout))
}

func (w *statusWriter) WriteHeader(code int) {
	if code >= 200 {
		w.start(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.start(http.StatusOK)
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush supports streaming responses (server-sent events).
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// wrap adds request IDs, security headers, deadlines, panic recovery,
// access logs and metrics around mux.
func (s *Server) wrap(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := requestid.FromHeader(r.Header.Get(requestid.Header))
		ctx := audit.WithClient(requestid.With(r.Context(), id), r.RemoteAddr)
		r = r.WithContext(ctx)
		w.Header().Set(requestid.Header, id)
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		if r.TLS != nil || s.cfg.HSTS {
			w.Header().Set("Strict-Transport-Security", HSTSValue)
		}
		if r.Body != nil && r.Body != http.NoBody {
			// The body must arrive within the timeout. Once it has been
			// read to its end, net/http clears the deadline itself (to
			// notice a client that goes away), so long handlers and
			// streams are not cut off; requests without a body get no
			// read deadline at all.
			_ = http.NewResponseController(w).SetReadDeadline(start.Add(s.cfg.BodyTimeout))
		}
		sw := &statusWriter{ResponseWriter: w, writeTimeout: s.cfg.WriteTimeout}
		_, pattern := mux.Handler(r)
		if pattern == "" {
			pattern = "unmatched"
		}
		if s.cfg.TracerProvider != nil {
			var end func()
			r, end = s.traceRequest(r, pattern, sw)
			defer end()
			ctx = r.Context()
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.cfg.Logger.ErrorContext(ctx, "panic serving request", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if sw.status == 0 {
					http.Error(sw, `{"error":{"code":"internal","message":"internal error; see the server log for request `+id+`"}}`, http.StatusInternalServerError)
				}
			}
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			d := time.Since(start)
			method := methodLabel(r.Method)
			s.cfg.Metrics.HTTPRequests.WithLabelValues(pattern, method, strconv.Itoa(status)).Inc()
			s.cfg.Metrics.HTTPDuration.WithLabelValues(pattern, method).Observe(d.Seconds())
			level := slog.LevelInfo
			if status >= 500 {
				level = slog.LevelError
			}
			// The URL path is logged, never the query string (it could
			// hold a token someone pasted) nor headers; a token pasted
			// into the path is masked.
			s.cfg.Logger.Log(ctx, level, "http request", "method", r.Method, "path", logPath(r.URL.Path), "route", pattern,
				"status", status, "bytes", sw.bytes, "duration_ms", float64(d.Microseconds())/1000, "remote", r.RemoteAddr)
		}()
		mux.ServeHTTP(sw, r)
	})
}

// methodLabel is the method label of a request's metrics: the standard
// methods by name, anything else (which anyone can make up, without
// credentials) as OTHER, so that requests cannot create new series.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

// logPath returns path for the access log, with every segment that looks
// like an API token (e.g. DELETE /api/v1/tokens/<token> by someone who
// meant its ID) replaced by [redacted].
func logPath(path string) string {
	if !strings.Contains(path, auth.TokenPrefix) {
		return path
	}
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		if auth.LooksLikeToken(seg) {
			segs[i] = "[redacted]"
		}
	}
	return strings.Join(segs, "/")
}

// Listen opens the server's listener (so callers learn the port before
// Serve) and, with Config.MetricsAddr, the metrics listener (see
// MetricsAddr).
func (s *Server) Listen(ctx context.Context) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	if s.cfg.MetricsAddr != "" {
		mln, err := lc.Listen(ctx, "tcp", s.cfg.MetricsAddr)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("listen on --metrics-addr %s: %w", s.cfg.MetricsAddr, err)
		}
		s.metricsLn = mln
	}
	return ln, nil
}

// CloseMetricsListener closes the metrics listener that Listen opened, for
// a caller that gives up before Serve (which closes it otherwise).
func (s *Server) CloseMetricsListener() error {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Close()
}

// MetricsAddr is the address of the metrics listener that Listen opened,
// or nil when /metrics is served on the main listener.
func (s *Server) MetricsAddr() net.Addr {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Addr()
}

// TLS reports whether the server serves HTTPS.
func (s *Server) TLS() bool { return s.cfg.TLSCertFile != "" }

// Serve serves on ln until ctx is done, then shuts down gracefully: it
// stops accepting, lets requests in flight finish (up to the shutdown
// timeout), and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var tlsConfig *tls.Config
	if s.TLS() {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		if err != nil {
			if s.metricsLn != nil {
				_ = s.metricsLn.Close()
			}
			return fmt.Errorf("load TLS certificate: %w", err)
		}
		tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	servers := []*http.Server{s.httpServer(ctx, s.handler, tlsConfig)}
	listeners := []net.Listener{s.limit(ln, tlsConfig)}
	if s.metricsLn != nil {
		servers = append(servers, s.httpServer(ctx, s.metricsHandler, tlsConfig))
		listeners = append(listeners, s.limit(s.metricsLn, tlsConfig))
	}
	errc := make(chan error, len(servers))
	for i, hs := range servers {
		go func() { errc <- hs.Serve(listeners[i]) }()
	}
	var serveErr error
	select {
	case err := <-errc:
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		s.cfg.Logger.Info("shutting down: waiting for requests in flight", "timeout", s.cfg.ShutdownTimeout.String())
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	for _, hs := range servers {
		if err := hs.Shutdown(sctx); err != nil {
			_ = hs.Close()
			errs = append(errs, fmt.Errorf("shutdown: %w", err))
		}
	}
	if serveErr != nil {
		return serveErr
	}
	for range servers {
		<-errc
	}
	return errors.Join(errs...)
}

// httpServer returns the http.Server of one listener.
func (s *Server) httpServer(ctx context.Context, h http.Handler, tlsConfig *tls.Config) *http.Server {
	return &http.Server{
		Handler:           h,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
}

// limit returns ln serving at most Config.MaxConnections connections at
// once (further ones wait to be accepted), with TLS when tlsConfig is set.
func (s *Server) limit(ln net.Listener, tlsConfig *tls.Config) net.Listener {
	if s.cfg.MaxConnections > 0 {
		ln = netutil.LimitListener(ln, s.cfg.MaxConnections)
	}
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	return ln
}

// traceRequest starts the span of a request, named by its method and
// route pattern (never its path, which may hold a pasted token, nor its
// query), as a child of the caller's trace when the request carries a W3C
// traceparent. The returned function ends it with the status code.
func (s *Server) traceRequest(r *http.Request, pattern string, sw *statusWriter) (*http.Request, func()) {
	ctx := tracing.Propagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	method := methodLabel(r.Method)
	name := method + " " + strings.TrimPrefix(pattern, r.Method+" ")
	ctx, span := tracing.Tracer(s.cfg.TracerProvider).Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", method), attribute.String("http.route", pattern)))
	return r.WithContext(ctx), func() {
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		span.SetAttributes(attribute.Int("http.response.status_code", status))
		if status >= 500 {
			tracing.Fail(span, strconv.Itoa(status))
		}
		span.End()
	}
}
