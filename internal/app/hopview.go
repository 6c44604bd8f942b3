package app

import (
	"time"

	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
)

// HopView is one SSH hop of a ConnectionView.
type HopView struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	User string `json:"user"`
	// HostKeyFingerprint is the hop's pinned host key ("" until the first
	// connection pins it, or when a host CA vouches for it instead).
	HostKeyFingerprint string `json:"host_key_fingerprint"`
	// HostKeyFingerprints are all the hop's pinned host keys, when it has
	// more than one (a key of each type, or a new key being rolled out).
	HostKeyFingerprints []string `json:"host_key_fingerprints,omitempty"`
	// PendingHostKeyFingerprint is a host key the hop presented that is not
	// pinned, waiting for approval (trust-host-key).
	PendingHostKeyFingerprint string     `json:"pending_host_key_fingerprint,omitempty"`
	PendingHostKeySeen        *time.Time `json:"pending_host_key_seen,omitempty"`
	// HostKeyUnverified is true when every pinned key was given with the
	// connection and the hop has not presented one yet: approving the key
	// it presents then replaces no key a handshake confirmed, so an editor
	// may; replacing a confirmed pin needs an admin.
	HostKeyUnverified bool `json:"host_key_unverified,omitempty"`
	// OwnKey is true when the hop logs in with a key pair of its own
	// rather than the connection's; OwnPublicKey is that key's
	// authorized_keys line and OwnKeyFingerprint its fingerprint.
	OwnKey            bool   `json:"own_key,omitempty"`
	OwnPublicKey      string `json:"own_public_key,omitempty"`
	OwnKeyFingerprint string `json:"own_key_fingerprint,omitempty"`
}

// hopViews returns the views of c's hops.
func hopViews(c *store.Connection) []HopView {
	hops := c.Spec.Hops()
	if len(hops) == 0 {
		return nil
	}
	pins := readPins(c, &c.Spec)
	out := make([]HopView, 0, len(hops))
	for i, h := range hops {
		hv := HopView{Host: h.Host, Port: h.Port, User: h.User, OwnKey: i > 0 && h.OwnKey}
		if hk := ownKeyOf(c, hops, i); hk != nil {
			if pub, err := sshkey.ParsePublic(hk.PublicKey); err == nil {
				hv.OwnPublicKey = sshkey.AuthorizedKey(pub, sshkey.Comment(c.Spec.Name))
				hv.OwnKeyFingerprint = sshkey.Fingerprint(pub)
			}
		}
		if e := findPins(pins, h.Addr()); e != nil {
			for _, k := range e.Keys {
				if hk, err := sshkey.ParsePublic(k); err == nil {
					hv.HostKeyFingerprints = append(hv.HostKeyFingerprints, sshkey.Fingerprint(hk))
				}
			}
			if len(hv.HostKeyFingerprints) > 0 {
				hv.HostKeyFingerprint = hv.HostKeyFingerprints[0]
			}
			hv.HostKeyUnverified = pinsUnverified(e)
			if len(hv.HostKeyFingerprints) < 2 {
				hv.HostKeyFingerprints = nil
			}
			if e.Pending != "" {
				if hk, err := sshkey.ParsePublic(e.Pending); err == nil {
					hv.PendingHostKeyFingerprint = sshkey.Fingerprint(hk)
					seen := e.PendingSeen
					hv.PendingHostKeySeen = &seen
				}
			}
		}
		out = append(out, hv)
	}
	return out
}

// KeyRotationView is the state of a connection's key rotation with two
// live keys.
type KeyRotationView struct {
	// Pending is true from `rotate-key --start` until the new key has
	// logged in to every hop (or the rotation is finished or cancelled):
	// the new key is not installed yet, and pgrelay still logs in with the
	// old one.
	Pending bool `json:"pending"`
	// NewPublicKey is the new key's authorized_keys line, while pending.
	NewPublicKey string `json:"new_public_key,omitempty"`
	// NewPublicKeyFingerprint is its fingerprint.
	NewPublicKeyFingerprint string     `json:"new_public_key_fingerprint,omitempty"`
	StartedAt               *time.Time `json:"started_at,omitempty"`
	// OldKeyExpiresAt is the expiry-time put on the old key's line.
	OldKeyExpiresAt *time.Time `json:"old_key_expires_at,omitempty"`
	// PromotedAt is when the new key replaced the old one, and PromotedBy
	// how: login (its first login to every hop) or finish.
	PromotedAt *time.Time `json:"promoted_at,omitempty"`
	PromotedBy string     `json:"promoted_by,omitempty"`
	// CancelledAt is when the last rotation was cancelled.
	CancelledAt *time.Time `json:"cancelled_at,omitempty"`
}

// rotationView returns c's rotation state, or nil when it never rotated
// with two live keys.
func rotationView(c *store.Connection) *KeyRotationView {
	r := c.KeyRotation
	if r.StartedAt.IsZero() && !c.RotationPending() {
		return nil
	}
	tp := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	v := &KeyRotationView{Pending: c.RotationPending(), StartedAt: tp(r.StartedAt), OldKeyExpiresAt: tp(r.OldKeyExpiresAt),
		PromotedAt: tp(r.PromotedAt), PromotedBy: r.PromotedBy, CancelledAt: tp(r.CancelledAt)}
	if v.Pending {
		if pub, err := sshkey.ParsePublic(c.PendingPublicKey); err == nil {
			v.NewPublicKey = sshkey.AuthorizedKey(pub, sshkey.Comment(c.Spec.Name))
			v.NewPublicKeyFingerprint = sshkey.Fingerprint(pub)
		}
	}
	return v
}

// NewKeyNotInstalled is what faces say about a rotation's new key until it
// has logged in.
const NewKeyNotInstalled = "new key not installed yet"
