package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
)

// keyCheckAD is the associated data of the key check value.
func keyCheckAD() []byte { return []byte("pgrelay/meta/" + keyCheckMeta) }

// keyCheckPlaintext is what the key check value holds.
const keyCheckPlaintext = "pgrelay key check v1"

// VerifyMasterKey checks, without writing, that kr opens the store's key
// check value: nil when it does, or when the store has none yet (nothing
// was sealed in it); ErrWrongMasterKey otherwise.
func VerifyMasterKey(ctx context.Context, st store.SecretsStore, kr *secret.Keyring) error {
	sealed, err := st.GetMeta(ctx, keyCheckMeta)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check master key: %w", err)
	}
	if _, err := kr.Open(sealed, keyCheckAD()); err != nil {
		return ErrWrongMasterKey
	}
	return nil
}

// ErrKeyRotated means the store's secrets are sealed with another key than
// this process's: the master key was rotated while it ran.
var ErrKeyRotated = errors.New("the store's master key changed since this process started (was it rotated with `pgrelay master-key rotate`?): " +
	"this process refuses to seal secrets with the old key; restart it with the new key")

// RotationPhase names a point of a master key rotation, for tests that
// stop the process there.
type RotationPhase string

// The phase RotateMasterKey passes to RotateOptions.Pause.
const (
	// PhaseResealed: every secret is sealed with the new key inside the
	// transaction, which is not committed yet.
	PhaseResealed RotationPhase = "resealed"
)

// RotateOptions configures RotateMasterKey.
type RotateOptions struct {
	// Pause, when set, is called at each phase of the rotation (tests stop
	// the process there).
	Pause func(ctx context.Context, phase RotationPhase)
}

// RotationReport says what a rotation sealed again.
type RotationReport struct {
	Connections int `json:"connections"`
	Passwords   int `json:"passwords"`
	PrivateKeys int `json:"private_keys"`
	// AuthSecrets counts Lakebase client secrets and AlloyDB
	// service-account keys.
	AuthSecrets int `json:"auth_secrets"`
	// PendingKeys counts the new keys of key rotations under way.
	PendingKeys int `json:"pending_keys,omitempty"`
	// HopKeys counts the own key pairs of SSH hops (own_key).
	HopKeys int `json:"hop_keys,omitempty"`
	// SSHCA is true when pgrelay's SSH CA key was sealed again.
	SSHCA bool `json:"ssh_ca,omitempty"`
}

// ErrAlreadyRotated means the store's secrets are already sealed with the
// new key (a rotation to that key completed before).
var ErrAlreadyRotated = errors.New("the store is already sealed with the new master key")

// RotateMasterKey seals every secret of the store again, from the old key
// to the new one, in one transaction: the passwords and private keys of
// every connection, their auth secrets (Lakebase client secrets, AlloyDB
// service-account keys) and the key check value. It first opens every secret
// with the old key, so a store it cannot fully read is refused before
// anything changes; afterwards the old key is refused (ErrWrongMasterKey)
// and only the new one opens the store. A password stored before passwords
// were bound to their endpoint is bound while it is sealed again.
func RotateMasterKey(ctx context.Context, st store.SecretsStore, old, next *secret.Keyring, opts RotateOptions) (*RotationReport, error) {
	rep := &RotationReport{}
	err := st.WithSecrets(ctx, func(tx store.SecretsTx) error {
		*rep = RotationReport{}
		check, err := tx.GetMeta(ctx, keyCheckMeta)
		switch {
		case errors.Is(err, store.ErrNotFound):
			check = nil
		case err != nil:
			return err
		}
		if check != nil {
			if _, err := old.Open(check, keyCheckAD()); err != nil {
				if _, nerr := next.Open(check, keyCheckAD()); nerr == nil {
					return ErrAlreadyRotated
				}
				return ErrWrongMasterKey
			}
		}
		conns, err := tx.ListConnections(ctx)
		if err != nil {
			return err
		}
		for _, c := range conns {
			pw, key, err := resealConnection(c, old, next)
			if err != nil {
				return fmt.Errorf("rotate master key: connection %s: %w; nothing was changed", c.Spec.Name, err)
			}
			if err := tx.SetConnectionSecrets(ctx, c.ID, pw, key); err != nil {
				return err
			}
			if len(c.SealedAuthSecret) > 0 {
				sealed, err := resealAuthSecret(c, old, next)
				if err != nil {
					return fmt.Errorf("rotate master key: connection %s: %w; nothing was changed", c.Spec.Name, err)
				}
				if err := tx.SetConnectionAuthSecret(ctx, c.ID, sealed); err != nil {
					return err
				}
				rep.AuthSecrets++
			}
			rep.Connections++
			if pw != nil {
				rep.Passwords++
			}
			if key != nil {
				rep.PrivateKeys++
			}
			if len(c.SealedPendingPrivateKey) > 0 {
				pk, err := reseal(c.SealedPendingPrivateKey, pendingKeyAD(c.ID), old, next)
				if err != nil {
					return fmt.Errorf("rotate master key: connection %s: new SSH private key: %w; nothing was changed", c.Spec.Name, err)
				}
				if err := tx.SetConnectionPendingKey(ctx, c.ID, pk); err != nil {
					return err
				}
				rep.PendingKeys++
			}
			if len(c.HopKeys) > 0 {
				hk, err := resealHopKeys(c, old, next)
				if err != nil {
					return fmt.Errorf("rotate master key: connection %s: %w; nothing was changed", c.Spec.Name, err)
				}
				if err := tx.SetConnectionHopKeys(ctx, c.ID, hk); err != nil {
					return err
				}
				rep.HopKeys += len(hk)
			}
		}
		ca, err := tx.GetMeta(ctx, sshCAMeta)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		default:
			sealed, err := reseal(ca, sshCAAD(), old, next)
			if err != nil {
				return fmt.Errorf("rotate master key: SSH CA key: %w; nothing was changed", err)
			}
			if err := tx.PutMeta(ctx, sshCAMeta, sealed); err != nil {
				return err
			}
			rep.SSHCA = true
		}
		sealed, err := next.Seal([]byte(keyCheckPlaintext), keyCheckAD())
		if err != nil {
			return err
		}
		if err := tx.PutMeta(ctx, keyCheckMeta, sealed); err != nil {
			return err
		}
		if opts.Pause != nil {
			opts.Pause(ctx, PhaseResealed)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if as, ok := st.(store.AuditStore); ok {
		r := &audit.Record{Time: time.Now(), Actor: actor(ctx), Action: "store.rotate_master_key", TargetKind: audit.TargetStore,
			Outcome: audit.OK, Detail: fmt.Sprintf("%d connections sealed again", rep.Connections)}
		// Best effort: the rotation has happened, and the caller must go
		// on to install the new key whatever becomes of the record.
		_ = as.AppendAudit(context.WithoutCancel(ctx), r)
	}
	return rep, nil
}

// resealConnection returns c's password and private key sealed with next
// (nil where c has none).
func resealConnection(c *store.Connection, old, next *secret.Keyring) (pw, key []byte, err error) {
	if len(c.SealedPassword) > 0 {
		ad := passwordAD(c.ID, c.Spec.Endpoint())
		plain, err := old.Open(c.SealedPassword, ad)
		if err != nil {
			if plain, err = old.Open(c.SealedPassword, legacyPasswordAD(c.ID)); err != nil {
				return nil, nil, fmt.Errorf("password: %w", err)
			}
		}
		if pw, err = next.Seal(plain, ad); err != nil {
			return nil, nil, err
		}
		clear(plain)
	}
	if len(c.SealedPrivateKey) > 0 {
		ad := privateKeyAD(c.ID)
		plain, err := old.Open(c.SealedPrivateKey, ad)
		if err != nil {
			return nil, nil, fmt.Errorf("SSH private key: %w", err)
		}
		if key, err = next.Seal(plain, ad); err != nil {
			return nil, nil, err
		}
		clear(plain)
	}
	return pw, key, nil
}

// resealAuthSecret returns c's auth secret sealed with next.
func resealAuthSecret(c *store.Connection, old, next *secret.Keyring) ([]byte, error) {
	ad := authSecretAD(c.ID, &c.Spec)
	plain, err := old.Open(c.SealedAuthSecret, ad)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", authSecretField(c.Spec.AuthKind()), err)
	}
	defer clear(plain)
	return next.Seal(plain, ad)
}

// KeyState is what a store's key check says about two keys.
type KeyState int

// Key states.
const (
	// KeyNone: the store has no key check yet.
	KeyNone KeyState = iota
	// KeyCurrent: the first key opens the store.
	KeyCurrent
	// KeyNext: the second key opens the store.
	KeyNext
	// KeyNeither: neither key opens the store.
	KeyNeither
)

// WhichKey says which of two keys (the current one and the next one of an
// interrupted rotation) opens the store, so that the caller can keep the
// right one.
func WhichKey(ctx context.Context, st store.SecretsStore, current, next *secret.Keyring) (KeyState, error) {
	sealed, err := st.GetMeta(ctx, keyCheckMeta)
	if errors.Is(err, store.ErrNotFound) {
		return KeyNone, nil
	}
	if err != nil {
		return 0, fmt.Errorf("check master key: %w", err)
	}
	if _, err := current.Open(sealed, keyCheckAD()); err == nil {
		return KeyCurrent, nil
	}
	if next != nil {
		if _, err := next.Open(sealed, keyCheckAD()); err == nil {
			return KeyNext, nil
		}
	}
	return KeyNeither, nil
}

// reseal opens sealed with old and seals it with next, for ad.
func reseal(sealed, ad []byte, old, next *secret.Keyring) ([]byte, error) {
	plain, err := old.Open(sealed, ad)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	return next.Seal(plain, ad)
}
