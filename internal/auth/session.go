package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SessionCookie is the name of the web UI's session cookie.
const SessionCookie = "pgrelay_session"

// CSRFHeader is the header that carries the CSRF token on requests
// authenticated by the session cookie.
const CSRFHeader = "X-CSRF-Token"

// CSRFField is the form field that carries the CSRF token.
const CSRFField = "csrf_token"

// ErrBadSession means a session cookie is malformed, forged or expired.
var ErrBadSession = errors.New("invalid or expired session")

// Sessions issues and checks signed session values and their CSRF tokens.
// A session value names a session ID (a random ID the store keeps with its
// token's ID; never the token) and an expiry, signed with HMAC-SHA256. The
// signature keeps forged values from reaching the store; whether the
// session still exists (not signed out, its token not revoked) is the
// store's to say.
type Sessions struct {
	key []byte
	now func() time.Time
}

// NewSessions returns Sessions signing with key (at least 32 bytes).
func NewSessions(key []byte, now func() time.Time) (*Sessions, error) {
	if len(key) < 32 {
		return nil, errors.New("session key must be at least 32 bytes")
	}
	if now == nil {
		now = time.Now
	}
	return &Sessions{key: key, now: now}, nil
}

func (s *Sessions) mac(parts ...string) string {
	m := hmac.New(sha256.New, s.key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Issue returns a session value for sessionID valid for ttl.
func (s *Sessions) Issue(sessionID string, ttl time.Duration) string {
	exp := strconv.FormatInt(s.now().Add(ttl).Unix(), 10)
	return sessionID + "." + exp + "." + s.mac("session", sessionID, exp)
}

// Verify checks a session value's signature and expiry and returns its
// session ID.
func (s *Sessions) Verify(value string) (string, error) {
	parts := strings.Split(value, ".")
	if len(parts) != 3 {
		return "", ErrBadSession
	}
	want := s.mac("session", parts[0], parts[1])
	if !hmac.Equal([]byte(want), []byte(parts[2])) {
		return "", ErrBadSession
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || s.now().Unix() >= exp {
		return "", ErrBadSession
	}
	return parts[0], nil
}

// CSRFToken returns the CSRF token bound to a session value.
func (s *Sessions) CSRFToken(session string) string { return s.mac("csrf", session) }

// CheckCSRF reports whether token is the CSRF token of session.
func (s *Sessions) CheckCSRF(session, token string) bool {
	return token != "" && hmac.Equal([]byte(s.CSRFToken(session)), []byte(token))
}
