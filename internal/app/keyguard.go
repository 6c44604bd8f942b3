package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
)

// keyGuard is the store a Service writes connections through. Before it
// writes one (which may carry a secret sealed just now), it checks that the
// store's key check still opens with the service's key: a process left
// running with the old key after `pgrelay master-key rotate` then refuses
// with ErrKeyRotated instead of sealing new secrets with a key the store no
// longer uses.
type keyGuard struct {
	store.Store
	kr *secret.Keyring
}

func (g keyGuard) current(ctx context.Context) error {
	err := VerifyMasterKey(ctx, g.Store, g.kr)
	if errors.Is(err, ErrWrongMasterKey) {
		return ErrKeyRotated
	}
	return err
}

// CreateConnection implements store.Store. The key check and the insert
// are one transaction over the store's secrets, so that a master key
// rotation is wholly before (the check refuses) or wholly after (it seals
// the new connection's secrets again): checked apart, a rotation that
// committed in between left the new secrets sealed with the old key. An
// update needs no such transaction: a rotation increments the version of
// every connection, so an update prepared before it is a conflict.
func (g keyGuard) CreateConnection(ctx context.Context, c *store.Connection) error {
	return g.Store.WithSecrets(ctx, func(tx store.SecretsTx) error {
		if err := g.currentIn(ctx, tx); err != nil {
			return err
		}
		return tx.CreateConnection(ctx, c)
	})
}

// currentIn is current inside a transaction over the store's secrets.
func (g keyGuard) currentIn(ctx context.Context, tx store.SecretsTx) error {
	sealed, err := tx.GetMeta(ctx, keyCheckMeta)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check master key: %w", err)
	}
	if _, err := g.kr.Open(sealed, keyCheckAD()); err != nil {
		return ErrKeyRotated
	}
	return nil
}

// UpdateConnection implements store.Store.
func (g keyGuard) UpdateConnection(ctx context.Context, c *store.Connection) error {
	if err := g.current(ctx); err != nil {
		return err
	}
	return g.Store.UpdateConnection(ctx, c)
}
