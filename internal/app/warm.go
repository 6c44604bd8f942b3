package app

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// warmKey names what a run's tunnel to c was opened with: the connection,
// its hops, login method, proxy command, host CAs and keepalive settings,
// and its login keys (the connection's and the hops' own). A tunnel kept warm is handed to a later run only
// under the same key (and while hostKeysStillTrusted), so any change to
// the connection (a new key pair, an edited hop) makes the next run dial
// afresh. "" means the tunnel must not be kept: certificate logins (each
// certificate names its run and expires with it) and key rotations in
// progress (a login decides the promotion).
func warmKey(c *store.Connection) string {
	t := c.Spec.Tunnel
	if t == nil || t.Auth == connection.SSHAuthCertificate || c.RotationPending() {
		return ""
	}
	hopKeys := make([]string, 0, len(c.HopKeys))
	for _, k := range c.HopKeys {
		hopKeys = append(hopKeys, k.Hop+" "+k.PublicKey)
	}
	b, err := json.Marshal(struct {
		ID        string             `json:"id"`
		Tunnel    *connection.Tunnel `json:"tunnel"`
		PublicKey string             `json:"public_key"`
		HopKeys   []string           `json:"hop_keys"`
	}{c.ID, t, c.SSHPublicKey, hopKeys})
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// hostKeysStillTrusted returns the check a kept tunnel passes before a run
// of c takes it: the host key each hop presented when the tunnel was
// opened is still among the keys pinned for that hop now (an approved
// change of host key retires tunnels verified with the old one). A hop
// without pins must have presented a host certificate, checked against
// the host CAs, which are part of warmKey or the server's configuration.
func hostKeysStillTrusted(c *store.Connection) func(*tunnel.Chain) error {
	pins := readPins(c, &c.Spec)
	return func(ch *tunnel.Chain) error {
		for i := range ch.Len() {
			hop := ch.Hop(i)
			presented := hop.HostKey()
			if presented == nil {
				return fmt.Errorf("hop %d: no host key", i+1)
			}
			e := findPins(pins, hop.Addr())
			if e == nil || len(e.Keys) == 0 {
				if _, ok := presented.(*ssh.Certificate); ok {
					continue
				}
				return fmt.Errorf("hop %d (%s): no host key pinned", i+1, hop.Addr())
			}
			if cert, ok := presented.(*ssh.Certificate); ok {
				presented = cert.Key
			}
			want := presented.Marshal()
			found := false
			for _, line := range e.Keys {
				if k, err := sshkey.ParsePublic(line); err == nil && bytes.Equal(k.Marshal(), want) {
					found = true
					break
				}
			}
			if !found {
				return fmt.Errorf("hop %d (%s): host key no longer pinned", i+1, hop.Addr())
			}
		}
		return nil
	}
}

// Close closes the tunnels kept warm between runs. The Connector opens no
// more warm ones afterwards; tunnels in use are their sessions' to close.
func (s *Connector) Close() {
	s.ssh.warm.Close()
}

// WarmTunnels returns how long a run's tunnel is kept open after the run
// (0: not kept) and how many are kept now.
func (s *Connector) WarmTunnels() (window time.Duration, kept int) {
	if s.ssh.warm == nil {
		return 0, 0
	}
	return s.ssh.warm.Window(), s.ssh.warm.Len()
}

// WarmPerConnection is how many tunnels of one connection are kept at
// most (0 when none are kept).
func (s *Connector) WarmPerConnection() int {
	if s.ssh.warm == nil {
		return 0
	}
	return s.ssh.warm.PerSlot()
}
