package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/sshca"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
)

// sshCAMeta names the meta value that holds pgrelay's SSH user CA key,
// sealed.
const sshCAMeta = "ssh_user_ca"

// sshCAPrincipalsMeta names the meta value that holds the principals
// pgrelay's SSH CA may sign for (JSON; not a secret). Absent (a CA made
// before the list existed, or without one), the CA signs for any
// principal.
const sshCAPrincipalsMeta = "ssh_user_ca_principals"

// MaxSSHCAPrincipals is the most principals the SSH CA's list holds.
const MaxSSHCAPrincipals = 256

// sshCAAD is the associated data of the sealed SSH CA key.
func sshCAAD() []byte { return []byte("pgrelay/meta/" + sshCAMeta) }

// SSHCAView is pgrelay's SSH user CA as faces show it: never its private
// key.
type SSHCAView struct {
	// PublicKey is the line for the bastions' TrustedUserCAKeys file.
	PublicKey string `json:"public_key"`
	// Fingerprint is the CA key's SHA256 fingerprint.
	Fingerprint string `json:"fingerprint"`
	// External is true when certificates are signed by an outside signer
	// (not a key kept in this store).
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

// AnyPrincipalWarning says what a CA that signs for any principal lets
// connections do, and how to restrict it.
const AnyPrincipalWarning = "pgrelay's SSH CA signs a certificate for whatever bastion user a connection names: " +
	"anyone who may create or change connections (editors included) can log in as any user, root included, " +
	"of every bastion that trusts the CA (sshd's TrustedUserCAKeys accepts any user named as principal). " +
	"Restrict it to the users your connections log in as: `pgrelay ssh-ca principals USER...` " +
	"(an admin; API PUT /api/v1/ssh-ca/principals)"

// PrincipalsNote says for a person which principals the CA may sign for:
// the list, or AnyPrincipalWarning.
func (v *SSHCAView) PrincipalsNote() string {
	if v.AnyPrincipal {
		return "Principals: any. " + AnyPrincipalWarning + "."
	}
	return "Principals: " + strings.Join(v.Principals, ", ") + ". pgrelay's SSH CA signs certificates for these bastion users only; " +
		"a certificate connection whose hop user is another is refused (an admin changes the list with `pgrelay ssh-ca principals USER...`)."
}

// SSHCAPrincipals is a new list of the principals pgrelay's SSH CA may
// sign for: Principals, or Any.
type SSHCAPrincipals struct {
	// Principals are bastion user names (at least one, unless Any).
	Principals []string `json:"principals,omitempty"`
	// Any removes the restriction: the CA signs for any principal.
	Any bool `json:"any,omitempty"`
}

// caPrincipals is the stored list of principals.
type caPrincipals struct {
	Any        bool     `json:"any,omitempty"`
	Principals []string `json:"principals,omitempty"`
}

func (p caPrincipals) allows(user string) bool { return p.Any || slices.Contains(p.Principals, user) }

// describe is the list for an audit record or a log.
func (p caPrincipals) describe() string {
	if p.Any {
		return "any principal"
	}
	return "principals: " + strings.Join(p.Principals, ", ")
}

// newCAPrincipals checks in and returns the list to store (duplicates
// dropped), or a ValidationError naming the field ("principals",
// "principals[i]", "any").
func newCAPrincipals(in SSHCAPrincipals) (caPrincipals, error) {
	var probs []fielderr.Problem
	add := func(field, format string, args ...any) {
		probs = append(probs, fielderr.Problem{Field: field, Problem: fmt.Sprintf(format, args...)})
	}
	switch {
	case in.Any && len(in.Principals) > 0:
		add("any", "give either principals or any, not both: any lets the CA sign for every user")
	case in.Any:
		return caPrincipals{Any: true}, nil
	case len(in.Principals) == 0:
		add("principals", "give at least one bastion user the CA may sign certificates for, e.g. dbtcloud "+
			"(or any, to let it sign for every user: not recommended)")
	case len(in.Principals) > MaxSSHCAPrincipals:
		add("principals", "%d users: at most %d", len(in.Principals), MaxSSHCAPrincipals)
	}
	var out []string
	for i, u := range in.Principals {
		if err := validatePrincipal(u); err != nil {
			add(fmt.Sprintf("principals[%d]", i), "%s", err)
			continue
		}
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	if len(probs) > 0 {
		return caPrincipals{}, &ValidationError{Subject: fielderr.SSHCA, Problems: probs}
	}
	return caPrincipals{Principals: out}, nil
}

// validatePrincipal checks one principal: a bastion user name, as a hop's
// user (pgrelay signs for a hop's user and nothing else).
func validatePrincipal(u string) error {
	switch {
	case u == "":
		return errors.New("empty: give a bastion user name, e.g. dbtcloud")
	case strings.Contains(u, ","):
		return fmt.Errorf("%q contains a comma: give each user on its own, not a comma-separated list", u)
	case strings.ContainsAny(u, "*?!"):
		return fmt.Errorf("%q: patterns are not accepted, only exact user names; to let the CA sign for every user, "+
			"use any instead (`pgrelay ssh-ca principals --any`; not recommended)", u)
	case strings.IndexFunc(u, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("%q contains white space or control characters: a user name is one word", u)
	}
	return connection.ValidateSSHUser(u)
}

// parseCAPrincipals reads a stored list. A value that does not read as
// one fails: no certificate is signed until an admin sets it again.
func parseCAPrincipals(b []byte) (caPrincipals, error) {
	var p caPrincipals
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(&p)
	if err == nil && p.Any && len(p.Principals) > 0 {
		err = errors.New("both any and principals")
	}
	for _, u := range p.Principals {
		if err == nil {
			err = validatePrincipal(u)
		}
	}
	if err != nil {
		return caPrincipals{}, fmt.Errorf("read SSH CA principals: the stored list (meta value %s) is damaged (%v): "+
			"no certificate is signed until an admin sets it again with `pgrelay ssh-ca principals USER...`", sshCAPrincipalsMeta, err)
	}
	return p, nil
}

// caPrincipals returns the principals the CA may sign for: the stored
// list, or any when none is stored.
func (s *Connector) caPrincipals(ctx context.Context) (caPrincipals, error) {
	b, err := s.store.GetMeta(ctx, sshCAPrincipalsMeta)
	if errors.Is(err, store.ErrNotFound) {
		return caPrincipals{Any: true}, nil
	}
	if err != nil {
		return caPrincipals{}, fmt.Errorf("read SSH CA principals: %w", err)
	}
	return parseCAPrincipals(b)
}

// ErrNoSSHCA means pgrelay has no SSH CA yet. It is also ErrNotFound.
var ErrNoSSHCA error = noSSHCAError{}

type noSSHCAError struct{}

func (noSSHCAError) Error() string {
	return "pgrelay has no SSH CA yet: create one with `pgrelay ssh-ca init --principal USER` (the bastion users connections may log in as), " +
		"then add the line of `pgrelay ssh-ca show` to each bastion's TrustedUserCAKeys"
}

// Is makes ErrNoSSHCA an ErrNotFound.
func (noSSHCAError) Is(target error) bool { return target == store.ErrNotFound }

// mayManageCA refuses a request whose role may not manage the SSH CA (the
// faces check the route's action; this holds for every face).
func mayManageCA(ctx context.Context) error {
	p := auth.PrincipalFrom(ctx)
	if p == nil || p.Role.Can(auth.ManageCA) {
		return nil
	}
	return fmt.Errorf("%w: managing pgrelay's SSH CA (its key and the principals it may sign for) needs the admin role "+
		"(token %q has the %s role)", ErrForbidden, p.Name, p.Role)
}

// InitSSHCA creates pgrelay's SSH user CA: an ed25519 key pair whose
// private key is sealed in the store, and, with principals, the list of
// the bastion users it may sign certificates for (saved in the same
// transaction). Without principals it signs for any user a connection
// names (SSHCAView.AnyPrincipal). ErrExists when there is one; a bad
// principal is a ValidationError naming principals[i]. An admin's (the
// manage_ca action).
func (s *Service) InitSSHCA(ctx context.Context, principals ...string) (_ *SSHCAView, err error) {
	e := &entry{action: "ssh_ca.init", targetKind: audit.TargetStore, target: sshCAMeta, detail: "any principal"}
	defer s.audited(ctx, e, &err)
	if err := mayManageCA(ctx); err != nil {
		return nil, err
	}
	if s.ssh.signer != nil {
		return nil, invalidf("certificates are signed by an outside signer here; there is no CA key to create")
	}
	var list []byte
	if len(principals) > 0 {
		p, err := newCAPrincipals(SSHCAPrincipals{Principals: principals})
		if err != nil {
			return nil, err
		}
		e.detail = p.describe()
		if list, err = json.Marshal(p); err != nil {
			return nil, fmt.Errorf("SSH CA principals: %w", err)
		}
	}
	guard := keyGuard{Store: s.store, kr: s.keyring}
	if err := guard.current(ctx); err != nil {
		return nil, err
	}
	priv, _, err := sshca.Generate()
	if err != nil {
		return nil, err
	}
	sealed, err := s.keyring.Seal(priv, sshCAAD())
	clear(priv)
	if err != nil {
		return nil, fmt.Errorf("seal SSH CA key: %w", err)
	}
	// The key check and the save are one transaction, so that a master key
	// rotation cannot commit between them (the CA key would stay sealed
	// with the old key), and the CA never signs before its list is saved.
	err = s.store.WithSecrets(ctx, func(tx store.SecretsTx) error {
		if err := guard.currentIn(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.GetMeta(ctx, sshCAMeta); err == nil {
			return fmt.Errorf("pgrelay's SSH CA %w: see it with `pgrelay ssh-ca show`", store.ErrExists)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if list != nil {
			if err := tx.PutMeta(ctx, sshCAPrincipalsMeta, list); err != nil {
				return err
			}
		}
		return tx.PutMeta(ctx, sshCAMeta, sealed)
	})
	if errors.Is(err, store.ErrExists) || errors.Is(err, ErrKeyRotated) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("save SSH CA key: %w", err)
	}
	v, err := s.SSHCA(ctx)
	if err != nil {
		return nil, err
	}
	s.logger.InfoContext(ctx, "SSH CA created", "fingerprint", v.Fingerprint, "principals", e.detail)
	return v, nil
}

// SetSSHCAPrincipals replaces the list of the bastion users pgrelay's SSH
// CA may sign certificates for (p.Principals), or removes it (p.Any: any
// user). Connections whose hop users the list leaves out are refused when
// they are saved and when a certificate would be signed for them. An
// admin's (the manage_ca action); ErrNoSSHCA when there is no CA; a bad
// list is a ValidationError naming principals, principals[i] or any.
func (s *Service) SetSSHCAPrincipals(ctx context.Context, p SSHCAPrincipals) (_ *SSHCAView, err error) {
	e := &entry{action: "ssh_ca.set_principals", targetKind: audit.TargetStore, target: sshCAPrincipalsMeta}
	defer s.audited(ctx, e, &err)
	if err := mayManageCA(ctx); err != nil {
		return nil, err
	}
	list, err := newCAPrincipals(p)
	if err != nil {
		return nil, err
	}
	e.detail = list.describe()
	b, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("SSH CA principals: %w", err)
	}
	err = s.store.WithSecrets(ctx, func(tx store.SecretsTx) error {
		if s.ssh.signer == nil {
			if _, err := tx.GetMeta(ctx, sshCAMeta); errors.Is(err, store.ErrNotFound) {
				return ErrNoSSHCA
			} else if err != nil {
				return err
			}
		}
		return tx.PutMeta(ctx, sshCAPrincipalsMeta, b)
	})
	if errors.Is(err, ErrNoSSHCA) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("save SSH CA principals: %w", err)
	}
	s.logger.InfoContext(ctx, "SSH CA principals changed", "principals", e.detail)
	return s.SSHCA(ctx)
}

// SSHCA returns pgrelay's SSH user CA; ErrNoSSHCA (wrapped with
// ErrNotFound) when there is none.
func (s *Service) SSHCA(ctx context.Context) (*SSHCAView, error) {
	signer, err := s.caSigner(ctx)
	if err != nil {
		return nil, err
	}
	p, err := s.caPrincipals(ctx)
	if err != nil {
		return nil, err
	}
	v := caView(signer, s.ssh.signer != nil)
	v.AnyPrincipal = p.Any
	if !p.Any {
		v.Principals = slices.Clone(p.Principals)
	}
	if v.Principals == nil {
		v.Principals = []string{}
	}
	return v, nil
}

func caView(signer sshca.Signer, external bool) *SSHCAView {
	line := sshca.TrustedUserCAKeysLine(signer.PublicKey())
	return &SSHCAView{PublicKey: line, Fingerprint: sshkey.Fingerprint(signer.PublicKey()), External: external,
		Setup: "On each bastion, as root: add this line to /etc/ssh/pgrelay_user_ca.pub, add " +
			"`TrustedUserCAKeys /etc/ssh/pgrelay_user_ca.pub` to /etc/ssh/sshd_config before any Match line and reload sshd " +
			"(sshd reads only the first TrustedUserCAKeys: when `sshd -T` shows one already, add this line to that file instead). " +
			"Certificates name the bastion user as their principal, so the user needs no authorized_keys entry."}
}

// certSigner returns the signer of user certificates: the outside one, or
// the store's CA key (opened for this use only), restricted to the
// principals of the CA's list when it has one. A list that cannot be
// read fails: nothing is signed.
func (s *Connector) certSigner(ctx context.Context) (sshca.Signer, error) {
	signer, err := s.caSigner(ctx)
	if err != nil {
		return nil, err
	}
	p, err := s.caPrincipals(ctx)
	if err != nil {
		return nil, err
	}
	if p.Any {
		return signer, nil
	}
	return sshca.Restrict(signer, p.Principals), nil
}

// caSigner returns the outside signer, or one of the store's CA key,
// unrestricted.
func (s *Connector) caSigner(ctx context.Context) (sshca.Signer, error) {
	if s.ssh.signer != nil {
		return s.ssh.signer, nil
	}
	sealed, err := s.store.GetMeta(ctx, sshCAMeta)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNoSSHCA
	}
	if err != nil {
		return nil, fmt.Errorf("read SSH CA: %w", err)
	}
	priv, err := s.keyring.Open(sealed, sshCAAD())
	if err != nil {
		return nil, fmt.Errorf("open SSH CA key: %w", err)
	}
	defer clear(priv)
	return sshca.NewLocalSigner(priv)
}

// principalProblems returns a field problem for each hop of a certificate
// login whose user is not one of the CA's principals.
func principalProblems(spec *connection.Spec, p caPrincipals) []fielderr.Problem {
	if p.Any || spec.Tunnel == nil || spec.Tunnel.Auth != connection.SSHAuthCertificate {
		return nil
	}
	var probs []fielderr.Problem
	for i, h := range spec.Hops() {
		if p.allows(h.User) {
			continue
		}
		field := "ssh_tunnel.user"
		if i > 0 {
			field = fmt.Sprintf("ssh_hops.%d.user", i)
		}
		probs = append(probs, fielderr.Problem{Field: field, Problem: fmt.Sprintf(
			"%q is not a user pgrelay's SSH CA may sign certificates for (its principals: %s): log in as one of those, "+
				"or have an admin allow it with `pgrelay ssh-ca principals %s` (API PUT /api/v1/ssh-ca/principals)",
			h.User, listOrNone(p.Principals), strings.Join(append(slices.Clone(p.Principals), h.User), " "))})
	}
	return probs
}

// checkCertPrincipals refuses a certificate login to a hop as a user the
// CA's list leaves out (a ValidationError naming each such hop's user
// field); nil for key logins.
func (s *Connector) checkCertPrincipals(ctx context.Context, spec *connection.Spec) error {
	if spec.Tunnel == nil || spec.Tunnel.Auth != connection.SSHAuthCertificate {
		return nil
	}
	p, err := s.caPrincipals(ctx)
	if err != nil {
		return &ValidationError{Subject: fielderr.Connection, Problems: []fielderr.Problem{{Field: "ssh_tunnel.auth", Problem: err.Error()}}}
	}
	if probs := principalProblems(spec, p); len(probs) > 0 {
		return &ValidationError{Subject: fielderr.Connection, Problems: probs}
	}
	return nil
}

// PrincipalNotAllowedError is returned when a certificate would be signed
// for a hop's user that the SSH CA's principals leave out (the list
// changed since the connection was saved): nothing was signed and nothing
// was sent to the hop. It is an ErrInvalid.
type PrincipalNotAllowedError struct {
	Connection string
	// Hop is "hop 2 of 3 (bastion-b:22)" in a chain, "SSH bastion
	// bastion:22" for one bastion.
	Hop string
	// User is the hop's user, the principal refused.
	User string
	// Allowed are the CA's principals.
	Allowed []string
	Err     *sshca.PrincipalNotAllowedError
}

// Error names the hop, the user, the CA's principals and both fixes.
func (e *PrincipalNotAllowedError) Error() string {
	return fmt.Sprintf("connection %s: %s: %s, so nothing was sent to the bastion: %s", e.Connection, e.Hop, e.Problem(), e.Fix())
}

// Problem says what the CA may not do.
func (e *PrincipalNotAllowedError) Problem() string {
	return fmt.Sprintf("pgrelay's SSH CA may not sign a certificate for user %q (its principals: %s)", e.User, listOrNone(e.Allowed))
}

// Fix names both fixes: another user, or the user allowed by an admin.
func (e *PrincipalNotAllowedError) Fix() string {
	flag := "--ssh-user USER"
	if strings.HasPrefix(e.Hop, "hop ") {
		flag = "--ssh-hop USER@HOST:PORT, every hop in order"
	}
	return fmt.Sprintf("log in as one of those (`pgrelay connection update %s %s`), or have an admin allow it with `pgrelay ssh-ca principals %s`",
		e.Connection, flag, strings.Join(append(slices.Clone(e.Allowed), e.User), " "))
}

// Unwrap returns the signer's refusal.
func (e *PrincipalNotAllowedError) Unwrap() error { return e.Err }

// Is makes the error an ErrInvalid.
func (e *PrincipalNotAllowedError) Is(target error) bool { return target == ErrInvalid }
