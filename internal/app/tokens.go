package app

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/store"
)

// TokenView is what faces show of an API token: never the token itself.
type TokenView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       auth.Role  `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

// NewToken is a created token: Token is shown once and never stored.
type NewToken struct {
	TokenView
	Token string `json:"token"`
}

func tokenView(t *store.Token) TokenView {
	v := TokenView{ID: t.ID, Name: t.Name, Role: auth.Role(t.Role), CreatedAt: t.CreatedAt}
	if !t.LastUsedAt.IsZero() {
		lu := t.LastUsedAt
		v.LastUsedAt = &lu
	}
	if !t.RevokedAt.IsZero() {
		r := t.RevokedAt
		v.RevokedAt = &r
	}
	return v
}

var tokenNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$`)

// CreateToken creates an API token with a role. The token is in the result
// and nowhere else: it cannot be shown again.
func (s *Service) CreateToken(ctx context.Context, name string, role auth.Role) (nt *NewToken, err error) {
	e := &entry{action: "token.create", targetKind: audit.TargetToken}
	if tokenNameRE.MatchString(name) && !auth.LooksLikeToken(name) {
		e.detail = "name " + name
		if rl, err := auth.ParseRole(string(role)); err == nil {
			e.detail += ", role " + string(rl)
		}
	}
	defer func() {
		if nt != nil {
			e.target = nt.ID
		}
		s.audited(ctx, e, &err)
	}()
	var probs []fielderr.Problem
	if !tokenNameRE.MatchString(name) {
		probs = append(probs, fielderr.Problem{Field: "name",
			Problem: fmt.Sprintf("%q is not accepted: 1 to 63 letters, digits, '.', '_', '@' and '-', starting with a letter or digit", name)})
	}
	if rl, err := auth.ParseRole(string(role)); err != nil {
		probs = append(probs, fielderr.Problem{Field: "role", Problem: err.Error()})
	} else {
		role = rl // stored normalised: "Editor" would match no role later
	}
	if len(probs) > 0 {
		return nil, &ValidationError{Subject: fielderr.Token, Problems: probs}
	}
	tok, hash, err := auth.NewToken()
	if err != nil {
		return nil, err
	}
	t := &store.Token{ID: newID()[:12], Name: name, Role: string(role), Hash: hash, CreatedAt: s.now().UTC()}
	if err := s.store.CreateToken(ctx, t); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("a token named %q: %w (revoke it first or choose another name)", name, store.ErrExists)
		}
		return nil, err
	}
	s.logger.InfoContext(ctx, "token created", "token_id", t.ID, "token_name", name, "role", role)
	return &NewToken{TokenView: tokenView(t), Token: tok}, nil
}

// ListTokens lists every token (revoked ones too), oldest first.
func (s *Service) ListTokens(ctx context.Context) ([]TokenView, error) {
	ts, err := s.store.ListTokens(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]TokenView, 0, len(ts))
	for _, t := range ts {
		out = append(out, tokenView(t))
	}
	return out, nil
}

// RevokeToken revokes a token by ID, by the name of an active token, or by
// the token itself (which no error message repeats).
func (s *Service) RevokeToken(ctx context.Context, idOrName string) (_ *TokenView, err error) {
	e := &entry{action: "token.revoke", targetKind: audit.TargetToken}
	if !auth.LooksLikeToken(idOrName) {
		e.target = idOrName
	}
	defer s.audited(ctx, e, &err)
	t, err := s.store.GetToken(ctx, idOrName)
	if errors.Is(err, store.ErrNotFound) && auth.LooksLikeToken(idOrName) {
		t, err = s.store.TokenByHash(ctx, auth.HashToken(idOrName))
	}
	if errors.Is(err, store.ErrNotFound) {
		ts, lerr := s.store.ListTokens(ctx)
		if lerr != nil {
			return nil, lerr
		}
		for _, c := range ts {
			if c.Name == idOrName && c.RevokedAt.IsZero() {
				t, err = c, nil
			}
		}
	}
	if err != nil && auth.LooksLikeToken(idOrName) {
		return nil, fmt.Errorf("the token given by its value: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("token %q: %w", idOrName, store.ErrNotFound)
	}
	e.target, e.detail = t.ID, "name "+t.Name
	if err := s.store.RevokeToken(ctx, t.ID, s.now().UTC()); err != nil {
		return nil, err
	}
	t, err = s.store.GetToken(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	s.logger.InfoContext(ctx, "token revoked", "token_id", t.ID, "token_name", t.Name)
	v := tokenView(t)
	return &v, nil
}

// ErrUnauthenticated means the token is missing, unknown or revoked.
var ErrUnauthenticated = errors.New("unauthenticated: missing, unknown or revoked token")

// Authenticate returns the principal of a token, or ErrUnauthenticated.
func (s *Service) Authenticate(ctx context.Context, token string) (*auth.Principal, error) {
	if !auth.LooksLikeToken(token) {
		return nil, ErrUnauthenticated
	}
	t, err := s.store.TokenByHash(ctx, auth.HashToken(token))
	return s.principal(ctx, t, err)
}

// AuthenticateID returns the principal of a token by ID (for sessions that
// remember the token ID, not the token), or ErrUnauthenticated if revoked.
func (s *Service) AuthenticateID(ctx context.Context, id string) (*auth.Principal, error) {
	t, err := s.store.GetToken(ctx, id)
	return s.principal(ctx, t, err)
}

// principal returns the principal of the token t that a store lookup found
// (recording its use), or ErrUnauthenticated when the lookup found none or
// the token is revoked.
func (s *Service) principal(ctx context.Context, t *store.Token, err error) (*auth.Principal, error) {
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, err
	}
	if !t.RevokedAt.IsZero() {
		return nil, ErrUnauthenticated
	}
	s.touch(ctx, t)
	return &auth.Principal{TokenID: t.ID, Name: t.Name, Role: auth.Role(t.Role)}, nil
}

func (s *Service) touch(ctx context.Context, t *store.Token) {
	now := s.now().UTC()
	if now.Sub(t.LastUsedAt) < time.Minute {
		return
	}
	if err := s.store.TouchToken(ctx, t.ID, now); err != nil {
		s.logger.WarnContext(ctx, "could not record token use", "token_id", t.ID, "error", err)
	}
}

// NeedsAdmin reports whether the store has no active token, so that
// BootstrapAdmin would create one.
func (s *Service) NeedsAdmin(ctx context.Context) (bool, error) {
	n, err := s.store.CountActiveTokens(ctx)
	if err != nil {
		return false, err
	}
	return n == 0, nil
}

// BootstrapAdmin creates an admin token named "admin" when the store has no
// active token, and returns it; it returns nil when tokens exist.
func (s *Service) BootstrapAdmin(ctx context.Context) (*NewToken, error) {
	need, err := s.NeedsAdmin(ctx)
	if err != nil || !need {
		return nil, err
	}
	name := "admin"
	for i := 2; ; i++ {
		nt, err := s.CreateToken(ctx, name, auth.Admin)
		if errors.Is(err, store.ErrExists) && i < 100 {
			name = fmt.Sprintf("admin-%d", i)
			continue
		}
		return nt, err
	}
}
