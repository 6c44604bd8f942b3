package app

import (
	"bytes"
	"context"
	"fmt"
	"slices"
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

// knownHostKeys parses the host keys given with a spec's hops (validated
// already), by hop address, and clears the input fields, so that they are
// not stored with the spec. Nil when none were given.
func knownHostKeys(spec *connection.Spec) (map[string][]ssh.PublicKey, error) {
	t := spec.Tunnel
	if t == nil {
		return nil, nil
	}
	var out map[string][]ssh.PublicKey
	for i, h := range t.Hops() {
		if strings.TrimSpace(h.KnownHost) == "" {
			continue
		}
		field := "ssh_tunnel.known_host"
		if i > 0 {
			field = fmt.Sprintf("ssh_hops.%d.known_host", i)
		}
		keys, err := sshkey.ParseKnownHosts(h.KnownHost, h.Host, h.Port)
		if err != nil {
			return nil, &ValidationError{Subject: fielderr.Connection, Problems: []fielderr.Problem{{Field: field, Problem: err.Error()}}}
		}
		if out == nil {
			out = map[string][]ssh.PublicKey{}
		}
		out[h.Addr()] = append(out[h.Addr()], keys...)
	}
	t.KnownHost = ""
	for i := range t.Next {
		t.Next[i].KnownHost = ""
	}
	return out, nil
}

// pinKnownHostKeys pins the keys given for each hop of c (replacing that
// hop's pins and forgetting a key of it waiting for approval), and keeps
// only the pins of c's hops. A key given that the hop has already been
// seen presenting stays verified: given again, it is not a guess.
func pinKnownHostKeys(c *store.Connection, pins []store.HopHostKeys, known map[string][]ssh.PublicKey) {
	for addr, keys := range known {
		e := pinsAt(&pins, addr)
		verified := verifiedPins(e)
		e.Keys = nil
		for _, k := range keys {
			comment := givenPin
			if slices.ContainsFunc(verified, func(v ssh.PublicKey) bool { return bytes.Equal(v.Marshal(), k.Marshal()) }) {
				comment = ""
			}
			e.Keys = append(e.Keys, sshkey.AuthorizedKey(k, comment))
		}
		e.Pending, e.PendingSeen = "", time.Time{}
	}
	writePins(c, pins)
}

// logKnownHostKeys logs the keys pinned as given.
func (s *Service) logKnownHostKeys(ctx context.Context, name string, known map[string][]ssh.PublicKey) {
	for addr, keys := range known {
		s.logger.InfoContext(ctx, "bastion host key pinned as given", "connection", name,
			"bastion", addr, "fingerprint", fingerprints(keys))
	}
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
	if err := s.recordPendingHostKey(ctx, name, addr, presented); err != nil {
		s.logger.WarnContext(ctx, "could not record pending host key", "connection", name, "error", err)
	}
	s.logger.WarnContext(ctx, "bastion host key not approved yet; connection refused", "connection", name,
		"bastion", addr, "presented", sshkey.Fingerprint(presented), "host_key_policy", string(HostKeyApprove))
}
