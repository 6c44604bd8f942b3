package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/store"
)

const connectionColumns = `id, name, spec, sealed_password, ssh_public_key, sealed_private_key,
	previous_public_key, host_keys, host_keys_addr, pending_host_key, pending_host_key_seen,
	created_at, updated_at, version, key_used_at, key_used_for, sealed_auth_secret,
	hop_host_keys, pending_public_key, sealed_pending_private_key, key_rotation, hop_keys`

// connValues are a connection's column values in connectionColumns order.
// args are the values in connectionColumns order.
func (v *connValues) args() []any {
	return []any{v.id, v.name, v.spec, v.sealedPassword, v.sshPublicKey, v.sealedPrivateKey, v.previousPublicKey,
		v.hostKeys, v.hostKeysAddr, v.pendingHostKey, v.pendingSeen, v.createdAt, v.updatedAt, v.version,
		v.keyUsedAt, v.keyUsedFor, v.sealedAuthSecret, v.hopHostKeys, v.pendingPublicKey, v.sealedPendingPrivateKey,
		v.keyRotation, v.hopKeys}
}

type connValues struct {
	id, name             string
	spec                 []byte
	sealedPassword       []byte
	sshPublicKey         string
	sealedPrivateKey     []byte
	previousPublicKey    string
	hostKeys             []string
	hostKeysAddr         string
	pendingHostKey       string
	pendingSeen          any
	createdAt, updatedAt time.Time
	version              int64
	keyUsedAt            any
	keyUsedFor           string
	sealedAuthSecret     []byte

	hopHostKeys             []byte
	pendingPublicKey        string
	sealedPendingPrivateKey []byte
	keyRotation             []byte
	hopKeys                 []byte
}

func connToValues(c *store.Connection) (*connValues, error) {
	spec, err := json.Marshal(c.Spec.Clone())
	if err != nil {
		return nil, fmt.Errorf("encode spec: %w", err)
	}
	hk := c.HostKeys
	if hk == nil {
		hk = []string{}
	}
	hops, rotation, err := sshStateJSON(c)
	if err != nil {
		return nil, err
	}
	hopKeys, err := hopKeysJSON(c.HopKeys)
	if err != nil {
		return nil, err
	}
	return &connValues{
		hopKeys:     hopKeys,
		hopHostKeys: hops, pendingPublicKey: c.PendingPublicKey, sealedPendingPrivateKey: c.SealedPendingPrivateKey,
		keyRotation: rotation,
		id:          c.ID, name: c.Spec.Name, spec: spec,
		sealedPassword: c.SealedPassword, sshPublicKey: c.SSHPublicKey, sealedPrivateKey: c.SealedPrivateKey,
		previousPublicKey: c.PreviousPublicKey, hostKeys: hk, hostKeysAddr: c.HostKeysAddr,
		pendingHostKey: c.PendingHostKey, pendingSeen: nullTime(c.PendingHostKeySeen),
		createdAt: c.CreatedAt, updatedAt: c.UpdatedAt, version: c.Version,
		keyUsedAt: nullTime(c.KeyUsedAt), keyUsedFor: c.KeyUsedFor, sealedAuthSecret: c.SealedAuthSecret,
	}, nil
}

func scanConnection(row pgx.Row) (*store.Connection, error) {
	var c store.Connection
	var name string
	var spec []byte
	var seen, keyUsed *time.Time
	var hops, rotation, hopKeys []byte
	if err := row.Scan(&c.ID, &name, &spec, &c.SealedPassword, &c.SSHPublicKey, &c.SealedPrivateKey,
		&c.PreviousPublicKey, &c.HostKeys, &c.HostKeysAddr, &c.PendingHostKey, &seen,
		&c.CreatedAt, &c.UpdatedAt, &c.Version, &keyUsed, &c.KeyUsedFor, &c.SealedAuthSecret,
		&hops, &c.PendingPublicKey, &c.SealedPendingPrivateKey, &rotation, &hopKeys); err != nil {
		return nil, err
	}
	if err := decodeHopKeys(&c, hopKeys); err != nil {
		return nil, fmt.Errorf("decode connection %s: %w", name, err)
	}
	if err := decodeSSHState(&c, hops, rotation); err != nil {
		return nil, fmt.Errorf("decode connection %s: %w", name, err)
	}
	if err := json.Unmarshal(spec, &c.Spec); err != nil {
		return nil, fmt.Errorf("decode connection %s: %w", name, err)
	}
	if c.HostKeys == nil {
		c.HostKeys = []string{}
	}
	c.PendingHostKeySeen = utc(seen)
	c.KeyUsedAt = utc(keyUsed)
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return &c, nil
}

// CreateConnection implements store.Store.
func (s *Store) CreateConnection(ctx context.Context, c *store.Connection) (rerr error) {
	defer markFull(&rerr)
	return createConnection(ctx, s.pool, c)
}

func createConnection(ctx context.Context, q querier, c *store.Connection) error {
	if c.Version == 0 {
		c.Version = 1
	}
	v, err := connToValues(c)
	if err != nil {
		return fmt.Errorf("create connection %s: %w", c.Spec.Name, err)
	}
	_, err = q.Exec(ctx, insertConnection, v.args()...)
	if isUniqueViolation(err) {
		return fmt.Errorf("create connection %s: %w", c.Spec.Name, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create connection %s: %w", c.Spec.Name, err)
	}
	return nil
}

// GetConnection implements store.Store.
func (s *Store) GetConnection(ctx context.Context, name string) (*store.Connection, error) {
	c, err := scanConnection(s.pool.QueryRow(ctx,
		`SELECT `+connectionColumns+` FROM pgrelay_connections WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("connection %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get connection %s: %w", name, err)
	}
	return c, nil
}

// ListConnections implements store.Store.
func (s *Store) ListConnections(ctx context.Context) ([]*store.Connection, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+connectionColumns+` FROM pgrelay_connections ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	defer rows.Close()
	var out []*store.Connection
	for rows.Next() {
		c, err := scanConnection(rows)
		if err != nil {
			return nil, fmt.Errorf("list connections: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	return out, nil
}

// UpdateConnection implements store.Store.
func (s *Store) UpdateConnection(ctx context.Context, c *store.Connection) (rerr error) {
	defer markFull(&rerr)
	v, err := connToValues(c)
	if err != nil {
		return fmt.Errorf("update connection %s: %w", c.Spec.Name, err)
	}
	// One statement: the row is locked while its version is compared, so
	// of two racing updates of the same version exactly one wins. When none
	// was updated, the row count says whether the record is gone.
	var updated, exists bool
	err = s.pool.QueryRow(ctx, `WITH u AS (
			UPDATE pgrelay_connections SET name = $2, spec = $3, sealed_password = $4, ssh_public_key = $5,
				sealed_private_key = $6, previous_public_key = $7, host_keys = $8, host_keys_addr = $9,
				pending_host_key = $10, pending_host_key_seen = $11, updated_at = $12, sealed_auth_secret = $14,
				hop_host_keys = $15, pending_public_key = $16, sealed_pending_private_key = $17, key_rotation = $18,
				hop_keys = $19, version = version + 1
			WHERE id = $1 AND version = $13
			RETURNING 1)
		SELECT EXISTS (SELECT FROM u), EXISTS (SELECT FROM pgrelay_connections WHERE id = $1)`,
		v.id, v.name, v.spec, v.sealedPassword, v.sshPublicKey, v.sealedPrivateKey, v.previousPublicKey,
		v.hostKeys, v.hostKeysAddr, v.pendingHostKey, v.pendingSeen, v.updatedAt, v.version, v.sealedAuthSecret,
		v.hopHostKeys, v.pendingPublicKey, v.sealedPendingPrivateKey, v.keyRotation, v.hopKeys).Scan(&updated, &exists)
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("update connection %s: %w", c.Spec.Name, store.ErrExists)
	case err != nil:
		return fmt.Errorf("update connection %s: %w", c.Spec.Name, err)
	case !updated && !exists:
		return fmt.Errorf("update connection %s: %w", c.Spec.Name, store.ErrNotFound)
	case !updated:
		return fmt.Errorf("update connection %s: %w", c.Spec.Name, store.ErrConflict)
	}
	c.Version++
	return nil
}

// DeleteConnection implements store.Store.
func (s *Store) DeleteConnection(ctx context.Context, name string) (rerr error) {
	defer markFull(&rerr)
	tag, err := s.pool.Exec(ctx, `DELETE FROM pgrelay_connections WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("delete connection %s: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("connection %s: %w", name, store.ErrNotFound)
	}
	return nil
}
