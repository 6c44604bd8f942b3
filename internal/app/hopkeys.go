package app

import (
	"fmt"
	"slices"
	"strings"
	"time"

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
// connection's. A key rotation rotates every key the connection logs in
// with: RotateKeyStart gives each hop's own key a pending successor as it
// gives the connection's key one, a login offers each hop its new key first
// and the old one as the fallback, and the login that every hop accepts
// with its new key promotes them all; RotateKey replaces them all at once.

// hopKeyAD is the associated data of a hop's own private key: bound to the
// connection and to the hop, so that it never opens for another hop.
func hopKeyAD(id, hop string) []byte {
	return []byte("pgrelay/connection/" + id + "/hop_private_key\x00hop=" + hop)
}

// hopPendingKeyAD is the associated data of the new private key a key
// rotation made for a hop's own key: bound like hopKeyAD, as the pending
// key, so that a pending key never opens as a current one.
func hopPendingKeyAD(id, hop string) []byte {
	return []byte("pgrelay/connection/" + id + "/hop_pending_private_key\x00hop=" + hop)
}

// newHopKeyPair makes a key pair of type typ for a hop of c (its comment
// names c) and returns its public key line and its private key sealed with
// ad, which binds it to the hop.
func (s *Connector) newHopKeyPair(c *store.Connection, typ sshkey.Type, ad []byte) (string, []byte, error) {
	pair, err := sshkey.Generate(typ, sshkey.Comment(c.Spec.Name))
	if err != nil {
		return "", nil, err
	}
	sealed, err := s.keyring.Seal(pair.PrivatePEM, ad)
	clear(pair.PrivatePEM)
	if err != nil {
		return "", nil, err
	}
	return sshkey.AuthorizedKey(pair.Public, ""), sealed, nil
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
		pub, sealed, err := s.newHopKeyPair(c, typ, hopKeyAD(c.ID, id))
		if err != nil {
			return fmt.Errorf("key pair of hop %s: %w", id, err)
		}
		out = append(out, store.HopKey{Hop: id, PublicKey: pub, SealedPrivateKey: sealed, CreatedAt: now})
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
	return s.openHopKey(c, k.Hop, k.SealedPrivateKey, hopKeyAD(c.ID, k.Hop), "SSH private key")
}

// openHopPendingSigner decrypts the new private key a key rotation made
// for a hop's own key; nil when it has none.
func (s *Connector) openHopPendingSigner(c *store.Connection, k *store.HopKey) (ssh.Signer, error) {
	if k.PendingPublicKey == "" || len(k.SealedPendingPrivateKey) == 0 {
		return nil, nil
	}
	return s.openHopKey(c, k.Hop, k.SealedPendingPrivateKey, hopPendingKeyAD(c.ID, k.Hop), "new SSH private key")
}

// openHopKey decrypts a private key of hop sealed with ad; what names it
// in errors.
func (s *Connector) openHopKey(c *store.Connection, hop string, sealed, ad []byte, what string) (ssh.Signer, error) {
	pem, err := s.keyring.Open(sealed, ad)
	if err != nil {
		return nil, fmt.Errorf("connection %s: %s of hop %s: %w", c.Spec.Name, what, hop, err)
	}
	defer clear(pem)
	sg, err := sshkey.Signer(pem)
	if err != nil {
		return nil, fmt.Errorf("connection %s: %s of hop %s: %w", c.Spec.Name, what, hop, err)
	}
	return sg, nil
}

// startHopRotations gives every own key of c's hops a new pending key pair
// (of the connection's key type), as RotateKeyStart gives the connection's.
func (s *Connector) startHopRotations(c *store.Connection) error {
	if len(c.HopKeys) == 0 {
		return nil
	}
	typ, err := sshkey.ParseType(c.Spec.Tunnel.KeyType)
	if err != nil {
		return err
	}
	for i := range c.HopKeys {
		k := &c.HopKeys[i]
		pub, sealed, err := s.newHopKeyPair(c, typ, hopPendingKeyAD(c.ID, k.Hop))
		if err != nil {
			return fmt.Errorf("new key pair of hop %s: %w", k.Hop, err)
		}
		k.PendingPublicKey, k.SealedPendingPrivateKey = pub, sealed
	}
	return nil
}

// dropHopRotations forgets the pending keys of c's hops.
func dropHopRotations(c *store.Connection) {
	for i := range c.HopKeys {
		c.HopKeys[i].PendingPublicKey, c.HopKeys[i].SealedPendingPrivateKey = "", nil
	}
}

// promoteHopKeys makes each pending key of c's hops the hop's key: the
// private key is sealed again as the current one; generated is when the
// rotation made it.
func (s *Connector) promoteHopKeys(c *store.Connection, generated time.Time) error {
	for i := range c.HopKeys {
		k := &c.HopKeys[i]
		if k.PendingPublicKey == "" {
			continue
		}
		priv, err := s.keyring.Open(k.SealedPendingPrivateKey, hopPendingKeyAD(c.ID, k.Hop))
		if err != nil {
			return fmt.Errorf("connection %s: new SSH private key of hop %s: %w", c.Spec.Name, k.Hop, err)
		}
		sealed, err := s.keyring.Seal(priv, hopKeyAD(c.ID, k.Hop))
		clear(priv)
		if err != nil {
			return err
		}
		k.PublicKey, k.SealedPrivateKey, k.CreatedAt = k.PendingPublicKey, sealed, generated
		k.PendingPublicKey, k.SealedPendingPrivateKey = "", nil
	}
	return nil
}

// resealHopKeys returns c's hop key pairs with their private keys (and a
// rotation's new ones) sealed with next.
func resealHopKeys(c *store.Connection, old, next *secret.Keyring) ([]store.HopKey, error) {
	out := make([]store.HopKey, len(c.HopKeys))
	for i, k := range c.HopKeys {
		sealed, err := reseal(k.SealedPrivateKey, hopKeyAD(c.ID, k.Hop), old, next)
		if err != nil {
			return nil, fmt.Errorf("SSH private key of hop %s: %w", k.Hop, err)
		}
		k.SealedPrivateKey = sealed
		if len(k.SealedPendingPrivateKey) > 0 {
			if k.SealedPendingPrivateKey, err = reseal(k.SealedPendingPrivateKey, hopPendingKeyAD(c.ID, k.Hop), old, next); err != nil {
				return nil, fmt.Errorf("new SSH private key of hop %s: %w", k.Hop, err)
			}
		}
		out[i] = k
	}
	return out, nil
}
