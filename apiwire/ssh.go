package apiwire

import "time"

// HopInput is one SSH hop of ConnectionInput.SSHHops.
type HopInput struct {
	Host string `json:"host"`
	Port int    `json:"port,omitempty"`
	User string `json:"user"`
	// KnownHost is the hop's host key to pin at once (write-only).
	KnownHost string `json:"known_host,omitempty"`
	// OwnKey gives the hop (after the first) a key pair of its own.
	OwnKey bool `json:"own_key,omitempty"`
}

// HopView is one SSH hop of a ConnectionView.
type HopView struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	User string `json:"user"`
	// HostKeyFingerprint is the hop's pinned host key ("" before first
	// use, or when a host CA vouches for it instead).
	HostKeyFingerprint string `json:"host_key_fingerprint"`
	// HostKeyFingerprints are all the hop's pinned host keys, when more
	// than one.
	HostKeyFingerprints []string `json:"host_key_fingerprints,omitempty"`
	// PendingHostKeyFingerprint is a presented key waiting for approval.
	PendingHostKeyFingerprint string     `json:"pending_host_key_fingerprint,omitempty"`
	PendingHostKeySeen        *time.Time `json:"pending_host_key_seen,omitempty"`
	// HostKeyUnverified is true when the hop's pinned keys were only given
	// with the connection, never presented by it: approving the key it
	// presents replaces no confirmed pin, so an editor may.
	HostKeyUnverified bool `json:"host_key_unverified,omitempty"`
	// OwnKey is true when the hop logs in with a key pair of its own;
	// OwnPublicKey is that key's line, OwnKeyFingerprint its fingerprint.
	OwnKey            bool   `json:"own_key,omitempty"`
	OwnPublicKey      string `json:"own_public_key,omitempty"`
	OwnKeyFingerprint string `json:"own_key_fingerprint,omitempty"`
}

// HopKeyLines are the authorized_keys lines of one hop.
type HopKeyLines struct {
	// Hop is the hop's place, from 1.
	Hop  int    `json:"hop"`
	Host string `json:"host"`
	Port int    `json:"port"`
	User string `json:"user"`
	// Line is the restricted line to install on the hop.
	Line string `json:"line"`
	// Old is, during a key rotation, the current key's line with
	// expiry-time="…Z" (UTC: OpenSSH 8.5 and later; before 8.5 the time
	// goes without Z in the host's local standard time).
	Old string `json:"old_line,omitempty"`
	// OwnKey is true when Line is the hop's own key.
	OwnKey bool `json:"own_key,omitempty"`
	// Fingerprint is the SHA256 fingerprint of Line's key.
	Fingerprint string `json:"fingerprint"`
}

// KeyRotationView is the state of a connection's key rotation with two
// live keys.
type KeyRotationView struct {
	// Pending is true while the new key waits to log in to every hop.
	Pending bool `json:"pending"`
	// NewPublicKey is the new key's authorized_keys line, while pending.
	NewPublicKey            string     `json:"new_public_key,omitempty"`
	NewPublicKeyFingerprint string     `json:"new_public_key_fingerprint,omitempty"`
	StartedAt               *time.Time `json:"started_at,omitempty"`
	// OldKeyExpiresAt is the expiry-time put on the old key's line.
	OldKeyExpiresAt *time.Time `json:"old_key_expires_at,omitempty"`
	// PromotedAt is when the new key replaced the old one, and PromotedBy
	// how: login or finish.
	PromotedAt *time.Time `json:"promoted_at,omitempty"`
	PromotedBy string     `json:"promoted_by,omitempty"`
	// CancelledAt is when the last rotation was cancelled.
	CancelledAt *time.Time `json:"cancelled_at,omitempty"`
}

// KeyRotationRequest is the optional body of POST
// /connections/{name}/key-rotation.
type KeyRotationRequest struct {
	// OldKeyLifetime is how long the old key's line stays valid
	// (expiry-time); default 168h.
	OldKeyLifetime Duration `json:"old_key_lifetime,omitempty"`
}

// SSHCAView is the body of GET and POST /ssh-ca: pgrelay's SSH user CA.
type SSHCAView struct {
	// PublicKey is the line for the bastions' TrustedUserCAKeys file.
	PublicKey string `json:"public_key"`
	// Fingerprint is the CA key's SHA256 fingerprint.
	Fingerprint string `json:"fingerprint"`
	// External is true when an outside signer signs certificates.
	External bool `json:"external,omitempty"`
	// Setup says how to make a bastion trust the CA.
	Setup string `json:"setup"`
	// Principals are the bastion users the CA may sign certificates for;
	// empty when AnyPrincipal.
	Principals []string `json:"principals"`
	// AnyPrincipal is true when no list restricts the principals: the CA
	// signs for whatever user a connection names.
	AnyPrincipal bool `json:"any_principal"`
}

// SSHCAInitRequest is the optional body of POST /ssh-ca.
type SSHCAInitRequest struct {
	// Principals are the bastion users the CA may sign certificates for;
	// absent, any user.
	Principals []string `json:"principals,omitempty"`
}

// SSHCAPrincipalsRequest is the body of PUT /ssh-ca/principals: the new
// list of principals, or Any.
type SSHCAPrincipalsRequest struct {
	// Principals replace the CA's list (at least one).
	Principals []string `json:"principals,omitempty"`
	// Any removes the list: the CA signs for any user.
	Any bool `json:"any,omitempty"`
}
