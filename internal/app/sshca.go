package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/sshca"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
)

// sshCAMeta names the meta value that holds pgrelay's SSH user CA key,
// sealed.
const sshCAMeta = "ssh_user_ca"

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
}

// ErrNoSSHCA means pgrelay has no SSH CA yet. It is also ErrNotFound.
var ErrNoSSHCA error = noSSHCAError{}

type noSSHCAError struct{}

func (noSSHCAError) Error() string {
	return "pgrelay has no SSH CA yet: create one with `pgrelay ssh-ca init`, " +
		"then add the line of `pgrelay ssh-ca show` to each bastion's TrustedUserCAKeys"
}

// Is makes ErrNoSSHCA an ErrNotFound.
func (noSSHCAError) Is(target error) bool { return target == store.ErrNotFound }

// InitSSHCA creates pgrelay's SSH user CA: an ed25519 key pair whose
// private key is sealed in the store. ErrExists when there is one.
func (s *Service) InitSSHCA(ctx context.Context) (_ *SSHCAView, err error) {
	defer s.audited(ctx, &entry{action: "ssh_ca.init", targetKind: audit.TargetStore, target: sshCAMeta}, &err)
	if s.ssh.signer != nil {
		return nil, invalidf("certificates are signed by an outside signer here; there is no CA key to create")
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
	// with the old key).
	err = s.store.WithSecrets(ctx, func(tx store.SecretsTx) error {
		if err := guard.currentIn(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.GetMeta(ctx, sshCAMeta); err == nil {
			return fmt.Errorf("pgrelay's SSH CA %w: see it with `pgrelay ssh-ca show`", store.ErrExists)
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		return tx.PutMeta(ctx, sshCAMeta, sealed)
	})
	if errors.Is(err, store.ErrExists) || errors.Is(err, ErrKeyRotated) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("save SSH CA key: %w", err)
	}
	signer, err := s.certSigner(ctx)
	if err != nil {
		return nil, err
	}
	s.logger.InfoContext(ctx, "SSH CA created", "fingerprint", sshkey.Fingerprint(signer.PublicKey()))
	return caView(signer, false), nil
}

// SSHCA returns pgrelay's SSH user CA; ErrNoSSHCA (wrapped with
// ErrNotFound) when there is none.
func (s *Service) SSHCA(ctx context.Context) (*SSHCAView, error) {
	signer, err := s.certSigner(ctx)
	if err != nil {
		return nil, err
	}
	return caView(signer, s.ssh.signer != nil), nil
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
// the store's CA key (opened for this use only).
func (s *Connector) certSigner(ctx context.Context) (sshca.Signer, error) {
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
