package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
)

// Key rotation with two live keys: RotateKeyStart makes a new key pair
// and keeps the current one (and so for each hop's own key, see
// hopkeys.go); every login offers the new key first and falls back to the
// old one, so nothing fails while the new key is being installed; the first
// login in which every hop accepts its new key promotes them (recorded with
// the time), and the old ones are no longer used. The old key's line is
// shown with expiry-time="…Z" (UTC, OpenSSH 8.5 and later; the bastion
// setup script writes it without Z for older sshd, see oldKeyLine), so
// that sshd refuses it after that time even if nobody removes it.

// pendingKeyAD is the associated data of a rotation's new private key.
func pendingKeyAD(id string) []byte {
	return []byte("pgrelay/connection/" + id + "/ssh_pending_private_key")
}

// DefaultOldKeyLifetime is how long the old key's line stays valid
// (expiry-time) after a rotation starts, when not given.
const DefaultOldKeyLifetime = 7 * 24 * time.Hour

// MaxOldKeyLifetime is the longest old key lifetime accepted.
const MaxOldKeyLifetime = 366 * 24 * time.Hour

// RotateKeyStart starts a rotation with two live keys: it makes a new key
// pair (sealed, pending) and returns the new key's lines and the old one's
// with expiry-time set oldLifetime (0: DefaultOldKeyLifetime) from now. A
// rotation already pending is refused.
func (s *Service) RotateKeyStart(ctx context.Context, name string, oldLifetime time.Duration) (_ *KeyRotation, err error) {
	e := &entry{action: "connection.rotate_key_start", targetKind: audit.TargetConnection, target: name, use: s.useOf(ctx, name)}
	defer s.audited(ctx, e, &err)
	if oldLifetime == 0 {
		oldLifetime = DefaultOldKeyLifetime
	}
	if oldLifetime < time.Hour || oldLifetime > MaxOldKeyLifetime {
		return nil, invalidf("old key lifetime %s is out of range: accepted is 1h to %s", oldLifetime, MaxOldKeyLifetime)
	}
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	if _, err := publicKeyLine(c, false); err != nil {
		return nil, err
	}
	if c.RotationPending() {
		return nil, invalidf("connection %s has a key rotation under way (started %s): finish it with "+
			"`pgrelay connection rotate-key %s --finish` or drop it with --cancel", name,
			c.KeyRotation.StartedAt.Format(time.RFC3339), name)
	}
	t, err := sshkey.ParseType(c.Spec.Tunnel.KeyType)
	if err != nil {
		return nil, err
	}
	pair, err := sshkey.Generate(t, sshkey.Comment(name))
	if err != nil {
		return nil, fmt.Errorf("rotate key of %s: %w", name, err)
	}
	sealed, err := s.keyring.Seal(pair.PrivatePEM, pendingKeyAD(c.ID))
	clear(pair.PrivatePEM)
	if err != nil {
		return nil, fmt.Errorf("rotate key of %s: %w", name, err)
	}
	now := s.now().UTC()
	c.PendingPublicKey = sshkey.AuthorizedKey(pair.Public, "")
	c.SealedPendingPrivateKey = sealed
	if err := s.startHopRotations(c); err != nil {
		return nil, fmt.Errorf("rotate key of %s: %w", name, err)
	}
	c.KeyRotation = store.KeyRotation{StartedAt: now, OldKeyExpiresAt: now.Add(oldLifetime).Truncate(time.Second)}
	c.UpdatedAt = now
	if err := s.store.UpdateConnection(ctx, c); err != nil {
		return nil, err
	}
	s.logger.InfoContext(ctx, "key rotation started", "connection", name,
		"new_key", sshkey.Fingerprint(pair.Public), "old_key_expires_at", c.KeyRotation.OldKeyExpiresAt)
	return rotationLines(c)
}

// rotationLines are the lines of a pending rotation: the new key's, and
// the old key's with its expiry-time.
func rotationLines(c *store.Connection) (*KeyRotation, error) {
	oldLine, err := publicKeyLine(c, false)
	if err != nil {
		return nil, err
	}
	newPub, err := sshkey.ParsePublic(c.PendingPublicKey)
	if err != nil {
		return nil, fmt.Errorf("connection %s: new public key: %w", c.Spec.Name, err)
	}
	exp := c.KeyRotation.OldKeyExpiresAt
	rot := &KeyRotation{Old: sshkey.WithExpiry(oldLine, exp), New: sshkey.AuthorizedKey(newPub, sshkey.Comment(c.Spec.Name)),
		OldKeyExpiresAt: &exp}
	newLines, err := keyLinesFor(c, c.PendingPublicKey)
	if err != nil {
		return nil, err
	}
	oldLines, err := keyLinesFor(c, c.SSHPublicKey)
	if err != nil {
		return nil, err
	}
	hops := c.Spec.Hops()
	for i := range newLines {
		if k := ownKeyOf(c, hops, i); k != nil {
			if k.PendingPublicKey == "" {
				continue // own_key given during the rotation: nothing to rotate yet
			}
			pub, err := sshkey.ParsePublic(k.PendingPublicKey)
			if err != nil {
				return nil, fmt.Errorf("connection %s: new public key of hop %s: %w", c.Spec.Name, k.Hop, err)
			}
			newLines[i].Fingerprint = sshkey.Fingerprint(pub)
			newLines[i].Line = sshkey.RestrictedTo(pub, sshkey.Comment(c.Spec.Name), forwardTarget(&c.Spec, i))
		}
		newLines[i].Old = sshkey.WithExpiry(oldLines[i].Line, exp)
	}
	rot.Hops = newLines
	rot.Connection = view(c)
	return rot, nil
}

// noRotationWithoutKey refuses the steps of a rotation on a connection
// without an SSH tunnel as --start does (it has no key pair): they said
// "no key rotation under way: start one with ... --start", which --start
// then refused.
func noRotationWithoutKey(c *store.Connection) error {
	if c.RotationPending() {
		return nil
	}
	_, err := publicKeyLine(c, false)
	return err
}

// RotateKeyStatus returns the lines of the connection's pending rotation.
func (s *Service) RotateKeyStatus(ctx context.Context, name string) (*KeyRotation, error) {
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := noRotationWithoutKey(c); err != nil {
		return nil, err
	}
	if !c.RotationPending() {
		return nil, invalidf("connection %s has no key rotation under way: start one with `pgrelay connection rotate-key %s --start`", name, name)
	}
	return rotationLines(c)
}

// RotateKeyFinish promotes a rotation's new key now, after checking that
// every hop accepts it (a login to each hop with the new key alone): the
// old key is no longer offered. Until then, the first login that every hop
// accepts with the new key promotes it by itself.
func (s *Service) RotateKeyFinish(ctx context.Context, name string) (_ *KeyRotation, err error) {
	e := &entry{action: "connection.rotate_key_finish", targetKind: audit.TargetConnection, target: name, use: s.useOf(ctx, name)}
	defer s.audited(ctx, e, &err)
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := noRotationWithoutKey(c); err != nil {
		return nil, err
	}
	if !c.RotationPending() {
		return nil, invalidf("connection %s has no key rotation under way: start one with `pgrelay connection rotate-key %s --start`", name, name)
	}
	oldLine, err := publicKeyLine(c, false)
	if err != nil {
		return nil, err
	}
	exp := c.KeyRotation.OldKeyExpiresAt
	chain, err := s.openChain(ctx, c, chainOptions{newKeyOnly: true, noPromote: true})
	if err != nil {
		return nil, fmt.Errorf("%s: the new key does not log in to every hop yet, so the old one is kept; install the new key "+
			"(its lines: `pgrelay connection rotate-key %s --status`) and retry: %w", NewKeyNotInstalled, name, err)
	}
	_ = chain.Close()
	if err := s.promoteKey(ctx, name, c.PendingPublicKey, "finish"); err != nil {
		return nil, err
	}
	c, err = s.store.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	newLine, err := publicKeyLine(c, false)
	if err != nil {
		return nil, err
	}
	return &KeyRotation{Old: sshkey.WithExpiry(oldLine, exp), New: newLine, OldKeyExpiresAt: &exp, Connection: view(c)}, nil
}

// RotateKeyCancel drops a rotation's new key: the current key stays.
func (s *Service) RotateKeyCancel(ctx context.Context, name string) (_ *ConnectionView, err error) {
	e := &entry{action: "connection.rotate_key_cancel", targetKind: audit.TargetConnection, target: name, use: s.useOf(ctx, name)}
	defer s.audited(ctx, e, &err)
	for range 3 {
		c, err := s.store.GetConnection(ctx, name)
		if err != nil {
			return nil, err
		}
		if err := noRotationWithoutKey(c); err != nil {
			return nil, err
		}
		if !c.RotationPending() {
			return nil, invalidf("connection %s has no key rotation under way", name)
		}
		c.PendingPublicKey, c.SealedPendingPrivateKey = "", nil
		dropHopRotations(c)
		c.KeyRotation.CancelledAt = s.now().UTC()
		c.UpdatedAt = c.KeyRotation.CancelledAt
		err = s.store.UpdateConnection(ctx, c)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.logger.InfoContext(ctx, "key rotation cancelled", "connection", name)
		return view(c), nil
	}
	return nil, fmt.Errorf("cancel key rotation of %s: %w", name, store.ErrConflict)
}

// promoteKey makes the pending key newPub the connection's key: the old
// key becomes PreviousPublicKey, the new private key is sealed as the
// connection's. It does nothing when newPub is no longer pending (another
// session promoted it, or the rotation was cancelled).
func (s *Connector) promoteKey(ctx context.Context, name, newPub, by string) error {
	for range 5 {
		c, err := s.store.GetConnection(ctx, name)
		if err != nil {
			return err
		}
		if c.PendingPublicKey != newPub || newPub == "" {
			return nil
		}
		priv, err := s.keyring.Open(c.SealedPendingPrivateKey, pendingKeyAD(c.ID))
		if err != nil {
			return fmt.Errorf("connection %s: new SSH private key: %w", name, err)
		}
		sealed, err := s.keyring.Seal(priv, privateKeyAD(c.ID))
		clear(priv)
		if err != nil {
			return err
		}
		if err := s.promoteHopKeys(c, c.KeyRotation.StartedAt); err != nil {
			return err
		}
		now := s.now().UTC()
		c.PreviousPublicKey = c.SSHPublicKey
		c.SSHPublicKey, c.SealedPrivateKey = c.PendingPublicKey, sealed
		c.PendingPublicKey, c.SealedPendingPrivateKey = "", nil
		c.KeyRotation.PromotedAt, c.KeyRotation.PromotedBy = now, by
		c.UpdatedAt = now
		err = s.store.UpdateConnection(ctx, c)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		s.logger.InfoContext(ctx, "new key promoted: the old key is no longer used", "connection", name, "by", by,
			"promoted_at", now)
		if by == "login" {
			// Done by pgrelay on a login, not by a request of its own:
			// the audit log says when the old key stopped being used.
			s.audited(ctx, &entry{action: "connection.rotate_key_promote", targetKind: audit.TargetConnection, target: name,
				detail: fmt.Sprintf("new key %s logged in to every hop and replaced %s", keyFingerprint(c.SSHPublicKey),
					keyFingerprint(c.PreviousPublicKey))}, nil)
		}
		return nil
	}
	return fmt.Errorf("promote new key of %s: %w", name, store.ErrConflict)
}

// keyFingerprint is the fingerprint of an authorized_keys line, or "" when
// it does not parse.
func keyFingerprint(line string) string {
	pub, err := sshkey.ParsePublic(line)
	if err != nil {
		return ""
	}
	return sshkey.Fingerprint(pub)
}
