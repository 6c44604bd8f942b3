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
