package store

import "time"

// HopHostKeys are the host keys pinned for one SSH hop of a connection,
// by its address, and a key it presented that waits for approval.
type HopHostKeys struct {
	// Addr is the hop's host:port the pins belong to.
	Addr string `json:"addr"`
	// Keys are the pinned host keys, in authorized_keys format.
	Keys []string `json:"keys,omitempty"`
	// Pending is a host key the hop presented that is not pinned (a change
	// to approve, or a first key under the approve policy); empty when none.
	Pending string `json:"pending,omitempty"`
	// PendingSeen is when Pending was presented.
	PendingSeen time.Time `json:"pending_seen,omitzero"`
}

// KeyRotation records a rotation of a connection's key pair with two live
// keys.
type KeyRotation struct {
	// StartedAt is when the new key pair was made (zero: no rotation yet).
	StartedAt time.Time `json:"started_at,omitzero"`
	// OldKeyExpiresAt is the expiry-time shown on the old key's line.
	OldKeyExpiresAt time.Time `json:"old_key_expires_at,omitzero"`
	// PromotedAt is when the new key replaced the old one (zero while it
	// is pending, or after a cancelled rotation).
	PromotedAt time.Time `json:"promoted_at,omitzero"`
	// PromotedBy says how: "login" (its first login to every hop) or
	// "finish" (rotate-key --finish).
	PromotedBy string `json:"promoted_by,omitempty"`
	// CancelledAt is when the rotation was cancelled (zero otherwise).
	CancelledAt time.Time `json:"cancelled_at,omitzero"`
}

// RotationPending reports whether the connection has a new key waiting to be
// promoted.
func (c *Connection) RotationPending() bool { return c.PendingPublicKey != "" }

// HopKey is the key pair of an SSH hop that has its own
// (connection.Hop.OwnKey) instead of the connection's.
type HopKey struct {
	// Hop is the hop it belongs to, "user@host:port" (connection.Hop's
	// String): the key is kept while a hop of that identity stays.
	Hop string `json:"hop"`
	// PublicKey is the public key in authorized_keys format (without
	// comment).
	PublicKey string `json:"public_key"`
	// SealedPrivateKey is the private key (OpenSSH PEM), sealed and bound
	// to the connection's ID and Hop.
	SealedPrivateKey []byte `json:"sealed_private_key"`
	// CreatedAt is when the key pair was generated.
	CreatedAt time.Time `json:"created_at"`
	// PendingPublicKey is, during the connection's key rotation, the hop's
	// new public key (authorized_keys format); "" otherwise.
	PendingPublicKey string `json:"pending_public_key,omitempty"`
	// SealedPendingPrivateKey is PendingPublicKey's private key, sealed
	// and bound like SealedPrivateKey, as the hop's pending key.
	SealedPendingPrivateKey []byte `json:"sealed_pending_private_key,omitempty"`
}

// HopKeyFor returns the own key pair of the hop with that identity
// ("user@host:port"), or nil.
func (c *Connection) HopKeyFor(hop string) *HopKey {
	for i := range c.HopKeys {
		if c.HopKeys[i].Hop == hop {
			return &c.HopKeys[i]
		}
	}
	return nil
}
