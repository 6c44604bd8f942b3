package app

import (
	"context"
	"time"

	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
)

// keyUseEvery is how often a successful SSH login with a connection's key
// is recorded at most: runs and queries that open a tunnel every few
// seconds do not write to the store each time.
const keyUseEvery = time.Minute

// keyUse names the key and hops of a tunnelled connection for
// store.Connection.KeyUsedFor: "SHA256:... user@host:port" (one
// user@host:port per hop); "" without a tunnel or key.
func keyUse(c *store.Connection) string {
	t := c.Spec.Tunnel
	if t == nil || c.SSHPublicKey == "" {
		return ""
	}
	pub, err := sshkey.ParsePublic(c.SSHPublicKey)
	if err != nil {
		return ""
	}
	use := sshkey.Fingerprint(pub)
	hops := c.Spec.Hops()
	for i, h := range hops {
		use += " " + h.User + "@" + h.Addr()
		if hk := ownKeyOf(c, hops, i); hk != nil {
			// A hop's own key: "user@host:port=SHA256:...".
			if own, err := sshkey.ParsePublic(hk.PublicKey); err == nil {
				use += "=" + sshkey.Fingerprint(own)
			}
		}
	}
	return use
}

// keyUsedAt is when an SSH login with the connection's current key to its
// current bastion last succeeded, or nil when none has (since the key or
// the bastion changed).
func keyUsedAt(c *store.Connection) *time.Time {
	if c.KeyUsedAt.IsZero() || c.KeyUsedFor == "" || c.KeyUsedFor != keyUse(c) {
		return nil
	}
	at := c.KeyUsedAt
	return &at
}

// markKeyUsed records that the bastion accepted c's key just now: from
// then on the connection page treats the key as installed.
func (s *Connector) markKeyUsed(ctx context.Context, c *store.Connection) {
	use := keyUse(c)
	if use == "" {
		return
	}
	now := s.now().UTC()
	if c.KeyUsedFor == use && now.Sub(c.KeyUsedAt) < keyUseEvery {
		return
	}
	if err := s.store.MarkKeyUsed(context.WithoutCancel(ctx), c.ID, use, now); err != nil {
		s.logger.WarnContext(ctx, "could not record that the bastion accepted the connection's key",
			"connection", c.Spec.Name, "error", err)
		return
	}
	c.KeyUsedAt, c.KeyUsedFor = now, use
}
