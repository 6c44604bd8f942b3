package sqlite

import (
	"encoding/json"
	"fmt"

	"github.com/pgrelay/pgrelay/internal/store"
)

// sshStateJSON encodes a connection's hop pins and key rotation for their
// columns.
func sshStateJSON(c *store.Connection) (hops, rotation string, err error) {
	hh := c.HopHostKeys
	if hh == nil {
		hh = []store.HopHostKeys{}
	}
	h, err := json.Marshal(hh)
	if err != nil {
		return "", "", fmt.Errorf("encode hop host keys: %w", err)
	}
	r, err := json.Marshal(c.KeyRotation)
	if err != nil {
		return "", "", fmt.Errorf("encode key rotation: %w", err)
	}
	return string(h), string(r), nil
}

// decodeSSHState decodes the columns of sshStateJSON into c.
func decodeSSHState(c *store.Connection, hops, rotation string) error {
	if hops != "" {
		if err := json.Unmarshal([]byte(hops), &c.HopHostKeys); err != nil {
			return fmt.Errorf("hop host keys: %w", err)
		}
	}
	if len(c.HopHostKeys) == 0 {
		c.HopHostKeys = nil
	}
	if rotation != "" {
		if err := json.Unmarshal([]byte(rotation), &c.KeyRotation); err != nil {
			return fmt.Errorf("key rotation: %w", err)
		}
	}
	return nil
}

// hopKeysJSON encodes a connection's hop key pairs for their column.
func hopKeysJSON(keys []store.HopKey) (string, error) {
	if keys == nil {
		keys = []store.HopKey{}
	}
	b, err := json.Marshal(keys)
	if err != nil {
		return "", fmt.Errorf("encode hop keys: %w", err)
	}
	return string(b), nil
}

// decodeHopKeys decodes the column of hopKeysJSON into c.
func decodeHopKeys(c *store.Connection, keys string) error {
	if keys != "" {
		if err := json.Unmarshal([]byte(keys), &c.HopKeys); err != nil {
			return fmt.Errorf("hop keys: %w", err)
		}
	}
	if len(c.HopKeys) == 0 {
		c.HopKeys = nil
	}
	return nil
}
