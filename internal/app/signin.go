package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/store"
)

// StartSession starts a web UI session for the token with that ID, lasting
// ttl, and returns the session's ID (for the signed cookie). Sessions that
// have expired are swept first.
func (s *Service) StartSession(ctx context.Context, tokenID string, ttl time.Duration) (_ string, err error) {
	defer func() {
		// The person signing in acts as the token, not yet authenticated
		// in ctx.
		a := audit.Actor{Kind: audit.ActorToken, ID: tokenID}
		if t, terr := s.store.GetToken(ctx, tokenID); terr == nil {
			a.Name = t.Name
		}
		s.audited(audit.WithActor(ctx, a), &entry{action: "session.sign_in", targetKind: audit.TargetSession, target: tokenID}, &err)
	}()
	now := s.now().UTC()
	if n, err := s.store.DeleteExpiredSessions(ctx, now); err != nil {
		s.logger.WarnContext(ctx, "could not sweep expired sessions", "error", err)
	} else if n > 0 {
		s.logger.DebugContext(ctx, "expired sessions swept", "count", n)
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("start session: %w", err)
	}
	id := base64.RawURLEncoding.EncodeToString(b)
	if err := s.store.CreateSession(ctx, &store.Session{ID: id, TokenID: tokenID, CreatedAt: now, ExpiresAt: now.Add(ttl)}); err != nil {
		return "", fmt.Errorf("start session: %w", err)
	}
	return id, nil
}

// AuthenticateSession returns the principal of a web UI session, or
// ErrUnauthenticated when the session was ended (signed out), has expired,
// or its token is revoked.
func (s *Service) AuthenticateSession(ctx context.Context, id string) (*auth.Principal, error) {
	sess, err := s.store.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, err
	}
	if !s.now().Before(sess.ExpiresAt) {
		return nil, ErrUnauthenticated
	}
	p, err := s.AuthenticateID(ctx, sess.TokenID)
	if err != nil {
		return nil, err
	}
	p.SessionID = sess.ID
	return p, nil
}

// EndSession ends a web UI session (signing out): its cookie is refused
// from now on, also where a copy of it was kept. Ending a session that is
// already gone is not an error.
func (s *Service) EndSession(ctx context.Context, id string) (err error) {
	defer s.audited(ctx, &entry{action: "session.sign_out", targetKind: audit.TargetSession}, &err)
	if err := s.store.DeleteSession(ctx, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("end session: %w", err)
	}
	return nil
}

// Reauthenticate checks that the principal of a request may still act:
// its session (when it came with one) has not ended and its token is not
// revoked. Long requests (event streams) call it now and then.
func (s *Service) Reauthenticate(ctx context.Context, p *auth.Principal) (*auth.Principal, error) {
	if p.SessionID != "" {
		return s.AuthenticateSession(ctx, p.SessionID)
	}
	return s.AuthenticateID(ctx, p.TokenID)
}
