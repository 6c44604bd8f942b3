package app

import (
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
)

// Hops with their own key pair (connection.Hop.OwnKey): pgrelay generates
// the pair when the hop is given own_key, seals the private key bound to
// the connection and the hop's identity (user@host:port), and keeps it
// while a hop of that identity keeps own_key; turning own_key off, or
// changing or removing the hop, drops it. The hop then logs in with that
// key (a certificate of it with certificate logins) instead of the
// connection's. Key rotations (rotate-key) rotate the connection's key
// only: a hop's own key is replaced by turning own_key off and on again.

// hopKeyAD is the associated data of a hop's own private key: bound to the
// connection and to the hop, so that it never opens for another hop.
func hopKeyAD(id, hop string) []byte {
	return []byte("pgrelay/connection/" + id + "/hop_private_key\x00hop=" + hop)
}

// keyTypeOf returns the sshkey type of a public key line (ssh-ed25519 or
// ssh-rsa), "" when it is neither.
func keyTypeOf(pubLine string) sshkey.Type {
	switch {
	case strings.HasPrefix(pubLine, ssh.KeyAlgoED25519+" "):
		return sshkey.Ed25519
	case strings.HasPrefix(pubLine, ssh.KeyAlgoRSA+" "):
		return sshkey.RSA
	}
	return ""
}

// syncHopKeys makes c.HopKeys the key pairs of c's hops with own_key: a
// hop that had one (same user@host:port, same key type) keeps it, a new
// one gets a new pair, and the pairs of other hops are dropped.
func (s *Connector) syncHopKeys(c *store.Connection) error {
	var want []connection.Hop
	if t := c.Spec.Tunnel; t != nil {
		for _, h := range t.Next {
			if h.OwnKey {
				want = append(want, h)
			}
		}
	}
	if len(want) == 0 {
		c.HopKeys = nil
		return nil
	}
	typ, err := sshkey.ParseType(c.Spec.Tunnel.KeyType)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	out := make([]store.HopKey, 0, len(want))
	for _, h := range want {
		id := h.String()
		if slices.ContainsFunc(out, func(k store.HopKey) bool { return k.Hop == id }) {
			continue
		}
		if k := c.HopKeyFor(id); k != nil && keyTypeOf(k.PublicKey) == typ {
			out = append(out, *k)
			continue
		}
		pair, err := sshkey.Generate(typ, sshkey.Comment(c.Spec.Name))
		if err != nil {
			return fmt.Errorf("key pair of hop %s: %w", id, err)
		}
		sealed, err := s.keyring.Seal(pair.PrivatePEM, hopKeyAD(c.ID, id))
		clear(pair.PrivatePEM)
		if err != nil {
			return fmt.Errorf("key pair of hop %s: %w", id, err)
		}
		out = append(out, store.HopKey{Hop: id, PublicKey: sshkey.AuthorizedKey(pair.Public, ""), SealedPrivateKey: sealed, CreatedAt: now})
	}
	c.HopKeys = out
	return nil
}

// ownKeyOf returns the own key pair of hop i of c (nil when it logs in
// with the connection's key).
func ownKeyOf(c *store.Connection, hops []connection.Hop, i int) *store.HopKey {
	if i == 0 || i >= len(hops) || !hops[i].OwnKey {
		return nil
	}
	return c.HopKeyFor(hops[i].String())
}

// openHopSigner decrypts the own private key of a hop.
func (s *Connector) openHopSigner(c *store.Connection, k *store.HopKey) (ssh.Signer, error) {
	pem, err := s.keyring.Open(k.SealedPrivateKey, hopKeyAD(c.ID, k.Hop))
	if err != nil {
		return nil, fmt.Errorf("connection %s: SSH private key of hop %s: %w", c.Spec.Name, k.Hop, err)
	}
	defer clear(pem)
	sg, err := sshkey.Signer(pem)
	if err != nil {
		return nil, fmt.Errorf("connection %s: key of hop %s: %w", c.Spec.Name, k.Hop, err)
	}
	return sg, nil
}

// resealHopKeys returns c's hop key pairs with their private keys sealed
// with next.
func resealHopKeys(c *store.Connection, old, next *secret.Keyring) ([]store.HopKey, error) {
	out := make([]store.HopKey, len(c.HopKeys))
	for i, k := range c.HopKeys {
		sealed, err := reseal(k.SealedPrivateKey, hopKeyAD(c.ID, k.Hop), old, next)
		if err != nil {
			return nil, fmt.Errorf("SSH private key of hop %s: %w", k.Hop, err)
		}
		k.SealedPrivateKey = sealed
		out[i] = k
	}
	return out, nil
}
