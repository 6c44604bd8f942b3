// Package sshca is pgrelay's SSH user certificate authority: it signs, for
// each tunnel, a short-lived certificate of a connection's key that the
// hops trust through sshd's TrustedUserCAKeys, so that no authorized_keys
// file has to list the key.
//
// A certificate names one principal (the hop's user), allows nothing but
// port forwarding (no PTY, agent, X11 or user rc), is valid from a minute
// ago until the end of what it is for plus a margin, and carries a key ID
// naming pgrelay, the connection and the run, which sshd logs with each
// login.
//
// [Signer] is the seam: [LocalSigner] signs with a CA key that pgrelay
// keeps sealed in its store; a signer backed by Vault's or OpenBao's SSH
// secrets engine can implement the same interface.
package sshca

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// Request is what a certificate is asked for.
type Request struct {
	// Key is the public key to certify.
	Key ssh.PublicKey
	// Principal is the user the certificate may log in as (the hop's user).
	Principal string
	// KeyID names what the certificate is for; sshd logs it.
	KeyID string
	// ValidAfter and ValidBefore bound the certificate's validity.
	ValidAfter, ValidBefore time.Time
}

// Signer signs user certificates.
type Signer interface {
	// PublicKey is the CA's public key: what sshd's TrustedUserCAKeys lists.
	PublicKey() ssh.PublicKey
	// SignUser returns a user certificate for req: one principal, only the
	// permit-port-forwarding extension, no critical options.
	SignUser(ctx context.Context, req Request) (*ssh.Certificate, error)
}

// Permissions are the extensions of every certificate pgrelay asks for:
// port forwarding only (OpenSSH grants nothing a certificate does not
// list: no PTY, agent or X11 forwarding, no user rc).
func Permissions() ssh.Permissions {
	return ssh.Permissions{Extensions: map[string]string{"permit-port-forwarding": ""}}
}

// Comment is the comment of pgrelay's CA public key.
const Comment = "pgrelay-ssh-ca"

// Generate makes a new CA key pair (ed25519) and returns its private key
// in OpenSSH PEM form (a secret) and its public key.
func Generate() (privatePEM []byte, pub ssh.PublicKey, err error) {
	pair, err := sshkey.Generate(sshkey.Ed25519, Comment)
	if err != nil {
		return nil, nil, fmt.Errorf("generate SSH CA key: %w", err)
	}
	return pair.PrivatePEM, pair.Public, nil
}

// LocalSigner signs with a CA key held in memory.
type LocalSigner struct {
	ca ssh.Signer
}

// NewLocalSigner parses a CA private key (OpenSSH PEM).
func NewLocalSigner(privatePEM []byte) (*LocalSigner, error) {
	s, err := sshkey.Signer(privatePEM)
	if err != nil {
		return nil, fmt.Errorf("SSH CA key: %w", err)
	}
	return &LocalSigner{ca: s}, nil
}

// PublicKey implements Signer.
func (s *LocalSigner) PublicKey() ssh.PublicKey { return s.ca.PublicKey() }

// SignUser implements Signer.
func (s *LocalSigner) SignUser(ctx context.Context, req Request) (*ssh.Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req.Key == nil || req.Principal == "" {
		return nil, errors.New("sign certificate: a key and a principal are required")
	}
	if !req.ValidBefore.After(req.ValidAfter) {
		return nil, fmt.Errorf("sign certificate: validity ends (%s) before it starts (%s)", req.ValidBefore, req.ValidAfter)
	}
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return nil, fmt.Errorf("sign certificate: serial: %w", err)
	}
	cert := &ssh.Certificate{
		Key:             req.Key,
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        ssh.UserCert,
		KeyId:           req.KeyID,
		ValidPrincipals: []string{req.Principal},
		ValidAfter:      uint64(req.ValidAfter.Unix()),
		ValidBefore:     uint64(req.ValidBefore.Unix()),
		Permissions:     Permissions(),
	}
	if err := cert.SignCert(rand.Reader, s.ca); err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return cert, nil
}

// Timing of certificates.
const (
	// Backdate is how long before now a certificate becomes valid, for
	// clocks that differ a little.
	Backdate = time.Minute
	// Margin is added to the end of what a certificate is for.
	Margin = 5 * time.Minute
	// DefaultLifetime is how long a certificate is for when its use has no
	// deadline (a query, the local proxy, exec), before Margin: an SSH
	// connection outlives its certificate (sshd checks it at login only),
	// and each tunnel opened again gets a new one.
	DefaultLifetime = time.Hour
)

// Validity returns when a certificate for a use ending at deadline (zero:
// none) is valid, by the clock now (pgrelay's, which a test may set) and
// the wall clock wall: from Backdate ago until the deadline plus Margin.
func Validity(now, wall, deadline time.Time) (after, before time.Time) {
	left := DefaultLifetime
	if !deadline.IsZero() {
		left = max(deadline.Sub(wall), 0)
	}
	return now.Add(-Backdate), now.Add(left + Margin)
}

// KeyID is the key ID of a certificate: "pgrelay connection=NAME" and,
// when set, " run=ID" and " hop=N/M".
func KeyID(connection, run string, hop, hops int) string {
	var b strings.Builder
	b.WriteString("pgrelay connection=" + connection)
	if run != "" {
		b.WriteString(" run=" + run)
	}
	if hops > 1 {
		fmt.Fprintf(&b, " hop=%d/%d", hop, hops)
	}
	return b.String()
}

// TrustedUserCAKeysLine is the line for sshd's TrustedUserCAKeys file.
func TrustedUserCAKeysLine(pub ssh.PublicKey) string {
	return sshkey.AuthorizedKey(pub, Comment)
}

// PrincipalNotAllowedError is returned by a restricted signer (see
// [Restrict]) asked for a principal its list does not name. Nothing is
// signed.
type PrincipalNotAllowedError struct {
	// Principal is the principal asked for.
	Principal string
	// Allowed are the principals the signer may sign for.
	Allowed []string
}

// Error names the principal and the allowed ones.
func (e *PrincipalNotAllowedError) Error() string {
	allowed := "none"
	if len(e.Allowed) > 0 {
		allowed = strings.Join(e.Allowed, ", ")
	}
	return fmt.Sprintf("sign certificate: principal %q is not one the SSH CA may sign for (allowed: %s)", e.Principal, allowed)
}

// Restrict returns a Signer that signs, with s, certificates for the
// allowed principals only (compared exactly, as sshd compares a
// certificate's principal with the user), and refuses any other principal
// with a *PrincipalNotAllowedError before s is asked. An empty list allows
// none.
func Restrict(s Signer, allowed []string) Signer {
	return &restricted{Signer: s, allowed: slices.Clone(allowed)}
}

type restricted struct {
	Signer
	allowed []string
}

// SignUser implements Signer.
func (r *restricted) SignUser(ctx context.Context, req Request) (*ssh.Certificate, error) {
	if !slices.Contains(r.allowed, req.Principal) {
		return nil, &PrincipalNotAllowedError{Principal: req.Principal, Allowed: slices.Clone(r.allowed)}
	}
	return r.Signer.SignUser(ctx, req)
}
