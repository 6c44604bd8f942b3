package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
)

// Host key pins of a connection's SSH hops. Every hop's pins are stored
// with the address they belong to: the first hop's in the record's
// original fields (HostKeys, HostKeysAddr, PendingHostKey), so that a
// connection with one bastion is stored as before, the others in
// HopHostKeys. readPins gathers them all, by address, and writePins puts
// them back for the connection's hops as they are now: pins of an address
// that is no longer a hop are forgotten, so a pin never applies to another
// server, and pins follow a hop whose place in the chain changed.

// readPins returns every hop's pins of c, by address. spec is the spec the
// record's pins were made for (c.Spec, or the spec before an update): a
// key waiting for approval while nothing is pinned belongs to its first
// hop.
func readPins(c *store.Connection, spec *connection.Spec) []store.HopHostKeys {
	var out []store.HopHostKeys
	first := c.HostKeysAddr
	if first == "" && spec.Tunnel != nil {
		first = bastionAddr(spec.Tunnel)
	}
	if first != "" && (len(c.HostKeys) > 0 || c.PendingHostKey != "") {
		e := store.HopHostKeys{Addr: first, Pending: c.PendingHostKey, PendingSeen: c.PendingHostKeySeen}
		if len(c.HostKeys) > 0 {
			e.Keys = slices.Clone(c.HostKeys)
		}
		out = append(out, e)
	}
	for _, h := range c.HopHostKeys {
		if findPins(out, h.Addr) == nil {
			h.Keys = slices.Clone(h.Keys)
			out = append(out, h)
		}
	}
	return out
}

// findPins returns the entry of addr, or nil.
func findPins(pins []store.HopHostKeys, addr string) *store.HopHostKeys {
	for i := range pins {
		if sameHopAddr(pins[i].Addr, addr) {
			return &pins[i]
		}
	}
	return nil
}

// sameHopAddr reports whether two hop addresses ("host:port") are the
// same: host names compare without regard to case, as they do in the
// endpoint a stored password is bound to (connection.Endpoint), so a
// host name written in another case keeps its pins. Were they forgotten,
// the next connection would trust whatever key answers there on first
// use, with the stored password not asked for again.
func sameHopAddr(a, b string) bool { return strings.EqualFold(a, b) }

// replacesPins reports whether pinning keys for a hop whose entry is e
// would trust a key other than one the hop has been seen presenting: e
// has a verified pin, and keys are not all among e's pins. Pinning a
// hop's first keys, keeping some of its pins, or replacing keys that were
// only given with the connection (never presented by the hop, so most
// likely a wrong key given) replaces nothing that a handshake confirmed.
func replacesPins(e *store.HopHostKeys, keys []ssh.PublicKey) bool {
	if e == nil || len(e.Keys) == 0 || pinsUnverified(e) {
		return false
	}
	for _, k := range keys {
		pinned := false
		for _, line := range e.Keys {
			if p, err := sshkey.ParsePublic(line); err == nil && bytes.Equal(p.Marshal(), k.Marshal()) {
				pinned = true
				break
			}
		}
		if !pinned {
			return true
		}
	}
	return false
}

// mayReplacePins refuses to replace the pinned host key of the hop at addr
// unless the request's role allows it (auth.ReplaceHostKey): the
// connection's stored credentials would then go to whatever presents the
// new key, so an editor, who may change a connection but only send its
// credentials where they were saved for, asks an admin. A request without
// a principal is a local command, run by whoever holds the store and its
// master key.
func mayReplacePins(ctx context.Context, name, addr string) error {
	p := auth.PrincipalFrom(ctx)
	if p == nil || p.Role.Can(auth.ReplaceHostKey) {
		return nil
	}
	return fmt.Errorf("%w: replacing the host key pinned for %s of connection %s needs the admin role (token %q has the %s role): "+
		"the connection's stored credentials would go to whatever presents the new key; ask an admin to check the key "+
		"on the bastion and approve it", ErrForbidden, addr, name, p.Name, p.Role)
}

// pinsAt returns the entry of addr, adding an empty one when missing.
func pinsAt(pins *[]store.HopHostKeys, addr string) *store.HopHostKeys {
	if e := findPins(*pins, addr); e != nil {
		return e
	}
	*pins = append(*pins, store.HopHostKeys{Addr: addr})
	return &(*pins)[len(*pins)-1]
}

// writePins stores pins on c for the hops of c.Spec: the first hop's in
// the original fields, the others' in HopHostKeys; addresses that are not
// a hop are dropped.
func writePins(c *store.Connection, pins []store.HopHostKeys) {
	c.HostKeys, c.HostKeysAddr, c.PendingHostKey, c.PendingHostKeySeen = nil, "", "", time.Time{}
	c.HopHostKeys = nil
	hops := c.Spec.Hops()
	if len(hops) == 0 {
		return
	}
	first := hops[0].Addr()
	if e := findPins(pins, first); e != nil {
		if len(e.Keys) > 0 {
			c.HostKeys, c.HostKeysAddr = slices.Clone(e.Keys), first
		}
		c.PendingHostKey, c.PendingHostKeySeen = e.Pending, e.PendingSeen
	}
	var seen []string
	for _, h := range hops[1:] {
		addr := h.Addr()
		if sameHopAddr(addr, first) || slices.ContainsFunc(seen, func(a string) bool { return sameHopAddr(a, addr) }) {
			continue
		}
		seen = append(seen, addr)
		if e := findPins(pins, addr); e != nil && (len(e.Keys) > 0 || e.Pending != "") {
			c.HopHostKeys = append(c.HopHostKeys, *e)
		}
	}
}

// parsePins parses an entry's pinned keys.
func parsePins(e *store.HopHostKeys) ([]ssh.PublicKey, error) {
	if e == nil {
		return nil, nil
	}
	var out []ssh.PublicKey
	for _, line := range e.Keys {
		k, err := sshkey.ParsePublic(line)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

// hopPlace names hop i (from 0) of n for messages: "" for a single hop,
// "hop 2 of 3 (bastion-b:22)" otherwise.
func hopPlace(i, n int, addr string) string {
	if n <= 1 {
		return ""
	}
	return fmt.Sprintf("hop %d of %d (%s)", i+1, n, addr)
}

// givenPin is the comment of a pinned host key line that was given with
// the connection (ssh_tunnel.known_host, --ssh-known-host) and that no
// handshake has shown the hop presenting yet. A key the hop presents that
// does not match such pins more likely means a wrong key was given than a
// changed one (HostKeyChangedError.Unverified). The comment goes once the
// hop presents the key (confirmGivenPins); pins without it (first use, an
// approval, or records from before) count as verified.
const givenPin = "pgrelay:given-unverified"

// pinsUnverified reports whether e has pins and every one of them was
// given and never presented by its hop.
func pinsUnverified(e *store.HopHostKeys) bool {
	if e == nil || len(e.Keys) == 0 {
		return false
	}
	for _, line := range e.Keys {
		if _, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil || comment != givenPin {
			return false
		}
	}
	return true
}

// verifiedPins returns e's pinned keys that its hop has been seen
// presenting (no givenPin comment).
func verifiedPins(e *store.HopHostKeys) []ssh.PublicKey {
	var out []ssh.PublicKey
	for _, line := range e.Keys {
		if k, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err == nil && comment != givenPin {
			out = append(out, k)
		}
	}
	return out
}

// hasGivenPin reports whether one of e's pins is still unverified.
func hasGivenPin(e *store.HopHostKeys) bool {
	if e == nil {
		return false
	}
	for _, line := range e.Keys {
		if _, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err == nil && comment == givenPin {
			return true
		}
	}
	return false
}

// confirmGivenPins marks the given pins of the hop at addr that match key
// as verified: the hop presented it in a handshake that passed.
func (s *Connector) confirmGivenPins(ctx context.Context, name, addr string, key ssh.PublicKey) {
	if cert, ok := key.(*ssh.Certificate); ok {
		key = cert.Key
	}
	want := key.Marshal()
	for range 3 {
		c, err := s.store.GetConnection(ctx, name)
		if err != nil {
			return
		}
		pins := readPins(c, &c.Spec)
		e := findPins(pins, addr)
		if e == nil {
			return
		}
		changed := false
		for i, line := range e.Keys {
			k, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
			if err == nil && comment == givenPin && bytes.Equal(k.Marshal(), want) {
				e.Keys[i], changed = sshkey.AuthorizedKey(k, ""), true
			}
		}
		if !changed {
			return
		}
		writePins(c, pins)
		err = s.store.UpdateConnection(context.WithoutCancel(ctx), c)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			s.logger.WarnContext(ctx, "could not record that the bastion presented the host key given", "connection", name,
				"bastion", addr, "error", err)
		}
		return
	}
}
