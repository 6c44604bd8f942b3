package app

import (
	"context"
	"errors"

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

// CreateConnection implements store.Store.
func (g keyGuard) CreateConnection(ctx context.Context, c *store.Connection) error {
	if err := g.current(ctx); err != nil {
		return err
	}
	return g.Store.CreateConnection(ctx, c)
}

// UpdateConnection implements store.Store.
func (g keyGuard) UpdateConnection(ctx context.Context, c *store.Connection) error {
	if err := g.current(ctx); err != nil {
		return err
	}
	return g.Store.UpdateConnection(ctx, c)
}
