// Package auth defines pgrelay's access control: roles, what each may do,
// API tokens (random, shown once, stored as a SHA-256 hash) and the
// principal a request acts as.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/pgrelay/pgrelay/apiwire"
)

// Role is what a token may do.
type Role string

// Roles, most powerful first.
const (
	// Admin may do everything, including managing tokens.
	Admin Role = "admin"
	// Editor may manage connections, run queries and (later) jobs.
	Editor Role = "editor"
	// Viewer may read connections (never secrets) and nothing else.
	Viewer Role = "viewer"
)

// Roles returns every role, most powerful first.
func Roles() []Role { return []Role{Admin, Editor, Viewer} }

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(strings.TrimSpace(s))); r {
	case Admin, Editor, Viewer:
		return r, nil
	}
	return "", fmt.Errorf("role %q is not accepted: use admin, editor or viewer", s)
}

// Action is something a request wants to do.
type Action string

// Actions checked by the faces.
const (
	// Read lists and shows records (no secrets).
	Read Action = "read"
	// Write creates, changes and deletes connections (and jobs).
	Write Action = "write"
	// Use opens connections: queries, tests, proxies, runs.
	Use Action = "use"
	// ManageTokens creates, lists and revokes tokens.
	ManageTokens Action = "manage_tokens"
	// ManageCA creates pgrelay's SSH CA and sets the principals it may
	// sign for (admins only).
	ManageCA Action = "manage_ca"
	// ReadAudit reads the audit log.
	ReadAudit Action = "read_audit"
	// ReplaceHostKey replaces the host key pinned for an SSH hop, by
	// approving a changed key or giving other keys (admins only): the
	// connection's stored credentials then go to whatever presents the
	// new key. Pinning a hop's first key is part of Write.
	ReplaceHostKey Action = "replace_host_key"
)

// Can reports whether role r may perform action a.
func (r Role) Can(a Action) bool {
	switch r {
	case Admin:
		return true
	case Editor:
		return a == Read || a == Write || a == Use
	case Viewer:
		return a == Read
	}
	return false
}

// Principal is who a request acts as.
type Principal struct {
	// TokenID identifies the token used (never the token itself).
	TokenID string
	// Name is the token's name, for logs.
	Name string
	Role Role
	// SessionID is the web UI session the request came with; empty for a
	// bearer token.
	SessionID string
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal in ctx, or nil.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// TokenPrefix starts every pgrelay API token, so that secret scanners and
// people can recognise one.
const TokenPrefix = apiwire.TokenPrefix

// NewToken returns a new random token (shown once) and its hash (stored).
func NewToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("generate token: %w", err)
	}
	token = TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// HashToken returns the stored form of a token. Tokens carry 256 random
// bits, so a fast hash is enough: it cannot be brute-forced.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// LooksLikeToken reports whether s has the shape of a pgrelay token.
func LooksLikeToken(s string) bool {
	return apiwire.LooksLikeToken(s)
}
