package app

import (
	"context"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
)

// HostKeyPolicy says what happens when a bastion presents a host key and
// none is pinned for it.
type HostKeyPolicy string

// Host key policies.
const (
	// HostKeyTOFU trusts the first key a bastion presents and pins it
	// (trust on first use). The default.
	HostKeyTOFU HostKeyPolicy = "tofu"
	// HostKeyApprove pins nothing by itself: a first key is recorded as
	// pending and the connection refused until an admin or editor approves
	// it (TrustHostKey), or a key is given with the connection
	// (ssh_tunnel.known_host).
	HostKeyApprove HostKeyPolicy = "approve"
)

// ParseHostKeyPolicy reads a policy name; empty is tofu.
func ParseHostKeyPolicy(s string) (HostKeyPolicy, error) {
	switch p := HostKeyPolicy(strings.ToLower(strings.TrimSpace(s))); p {
	case "":
		return HostKeyTOFU, nil
	case HostKeyTOFU, HostKeyApprove:
		return p, nil
	}
	return "", fmt.Errorf("%q is not accepted: use tofu (pin the first key a bastion presents) or approve (hold it until approved)", s)
}

// approves reports whether the policy holds first keys for approval.
func (p HostKeyPolicy) approves() bool { return p == HostKeyApprove }

// knownHostKeys parses the host keys given with a spec (validated
// already) and clears the input field, so that it is not stored with the
// spec. Nil when none were given.
func knownHostKeys(spec *connection.Spec) ([]ssh.PublicKey, error) {
	t := spec.Tunnel
	if t == nil || strings.TrimSpace(t.KnownHost) == "" {
		if t != nil {
			t.KnownHost = ""
		}
		return nil, nil
	}
	keys, err := sshkey.ParseKnownHosts(t.KnownHost, t.Host, t.Port)
	if err != nil {
		return nil, &ValidationError{Subject: fielderr.Connection, Problems: []fielderr.Problem{{Field: "ssh_tunnel.known_host", Problem: err.Error()}}}
	}
	t.KnownHost = ""
	return keys, nil
}

// pinKnownHostKeys pins keys for c's bastion (replacing any pins and
// forgetting a pending key), when keys were given.
func pinKnownHostKeys(c *store.Connection, keys []ssh.PublicKey) {
	if len(keys) == 0 || c.Spec.Tunnel == nil {
		return
	}
	c.HostKeys = c.HostKeys[:0:0]
	for _, k := range keys {
		c.HostKeys = append(c.HostKeys, sshkey.AuthorizedKey(k, ""))
	}
	c.HostKeysAddr = bastionAddr(c.Spec.Tunnel)
	c.PendingHostKey, c.PendingHostKeySeen = "", time.Time{}
}

// fingerprints lists the keys' fingerprints, for the log.
func fingerprints(keys []ssh.PublicKey) string {
	fps := make([]string, len(keys))
	for i, k := range keys {
		fps[i] = sshkey.Fingerprint(k)
	}
	return joinFingerprints(fps)
}

// hostKeyUnapproved records the first key a bastion presented, under the
// approve policy, as pending approval and logs the refusal.
func (s *Connector) hostKeyUnapproved(ctx context.Context, name, addr string, presented ssh.PublicKey) {
	if err := s.recordPendingHostKey(ctx, name, presented); err != nil {
		s.logger.WarnContext(ctx, "could not record pending host key", "connection", name, "error", err)
	}
	s.logger.WarnContext(ctx, "bastion host key not approved yet; connection refused", "connection", name,
		"bastion", addr, "presented", sshkey.Fingerprint(presented), "host_key_policy", string(HostKeyApprove))
}
