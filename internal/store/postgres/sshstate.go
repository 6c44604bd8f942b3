package postgres

import (
	"encoding/json"
	"fmt"

	"github.com/pgrelay/pgrelay/internal/store"
)

// sshStateJSON encodes a connection's hop pins and key rotation for their
// jsonb columns.
func sshStateJSON(c *store.Connection) (hops, rotation []byte, err error) {
	hh := c.HopHostKeys
	if hh == nil {
		hh = []store.HopHostKeys{}
	}
	if hops, err = json.Marshal(hh); err != nil {
		return nil, nil, fmt.Errorf("encode hop host keys: %w", err)
	}
	if rotation, err = json.Marshal(c.KeyRotation); err != nil {
		return nil, nil, fmt.Errorf("encode key rotation: %w", err)
	}
	return hops, rotation, nil
}

// decodeSSHState decodes the columns of sshStateJSON into c.
func decodeSSHState(c *store.Connection, hops, rotation []byte) error {
	if len(hops) > 0 {
		if err := json.Unmarshal(hops, &c.HopHostKeys); err != nil {
			return fmt.Errorf("hop host keys: %w", err)
		}
	}
	if len(c.HopHostKeys) == 0 {
		c.HopHostKeys = nil
	}
	if len(rotation) > 0 {
		if err := json.Unmarshal(rotation, &c.KeyRotation); err != nil {
			return fmt.Errorf("key rotation: %w", err)
		}
	}
	return nil
}

// hopKeysJSON encodes a connection's hop key pairs for their jsonb column.
func hopKeysJSON(keys []store.HopKey) ([]byte, error) {
	if keys == nil {
		keys = []store.HopKey{}
	}
	b, err := json.Marshal(keys)
	if err != nil {
		return nil, fmt.Errorf("encode hop keys: %w", err)
	}
	return b, nil
}

// decodeHopKeys decodes the column of hopKeysJSON into c.
func decodeHopKeys(c *store.Connection, keys []byte) error {
	if len(keys) > 0 {
		if err := json.Unmarshal(keys, &c.HopKeys); err != nil {
			return fmt.Errorf("hop keys: %w", err)
		}
	}
	if len(c.HopKeys) == 0 {
		c.HopKeys = nil
	}
	return nil
}
