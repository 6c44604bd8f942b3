package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// guardMetrics returns h behind Config.MetricsToken, when one is set: a
// scrape must send "Authorization: Bearer <token>" (Prometheus:
// authorization.credentials_file), or it gets 401.
func (s *Server) guardMetrics(h http.Handler) http.Handler {
	if s.cfg.MetricsToken.IsZero() {
		return h
	}
	want := sha256.Sum256([]byte(s.cfg.MetricsToken.Reveal()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
		got := sha256.Sum256([]byte(strings.TrimSpace(token)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			s.cfg.Logger.WarnContext(r.Context(), "metrics scrape refused: missing or wrong bearer token", "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="pgrelay metrics"`)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte("unauthenticated: /metrics needs \"Authorization: Bearer <token>\" with the token of pgrelay serve --metrics-token-file\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
