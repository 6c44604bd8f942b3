package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/pgrelay/pgrelay/internal/childenv"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/sshca"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// SSHConfig configures how a Service reaches SSH hops.
type SSHConfig struct {
	// KnownHosts is the server's default host trust (--ssh-known-hosts):
	// @cert-authority, @revoked and plain known_hosts lines that apply to
	// every connection's hops, besides each connection's own.
	KnownHosts sshkey.HostTrust
	// ProxyCommands says which programs may carry the SSH connection to a
	// first hop (ssh_tunnel.proxy_command), and as whom they run: on a
	// server the command allowlist (--allow-command) and the user of
	// --run-as; a local command runs any program as its own user
	// (AnyProgram), a local `job run` given those flags follows them. The
	// zero value runs none. SetProxyCommands replaces it.
	ProxyCommands jobs.CommandPolicy
	// Signer signs the user certificates of connections with
	// ssh_tunnel.auth certificate; nil signs with pgrelay's own CA, kept
	// sealed in the store (`pgrelay ssh-ca init`). A signer backed by Vault
	// or OpenBao plugs in here.
	Signer sshca.Signer
	// WarmTunnels keeps a run's tunnel open this long after the run ends,
	// for the next run of the same connection (--ssh-warm): that run skips
	// the SSH handshakes of every hop. Zero closes tunnels when their run
	// ends. Tunnels of certificate logins and of key rotations in progress
	// are never kept.
	WarmTunnels time.Duration
	// WarmPerConnection is how many tunnels of one connection are kept at
	// once (runs of a connection running at the same time each end with
	// one); at least 1. A server sets its --max-runs.
	WarmPerConnection int
}

// sshSettings are a Service's SSH settings.
type sshSettings struct {
	knownHosts    sshkey.HostTrust
	proxyCommands *atomic.Pointer[jobs.CommandPolicy]
	signer        sshca.Signer
	// warm holds the tunnels kept open between runs; nil keeps none.
	warm *tunnel.Warm
}

func newSSHSettings(c SSHConfig) sshSettings {
	p := &atomic.Pointer[jobs.CommandPolicy]{}
	pc := c.ProxyCommands
	p.Store(&pc)
	st := sshSettings{knownHosts: c.KnownHosts, proxyCommands: p, signer: c.Signer}
	if c.WarmTunnels > 0 {
		st.warm = tunnel.NewWarm(c.WarmTunnels, c.WarmPerConnection)
	}
	return st
}

// SetProxyCommands replaces the policy of proxy commands: a server sets its
// command allowlist once it is built (before it serves).
func (s *Connector) SetProxyCommands(p jobs.CommandPolicy) { s.ssh.proxyCommands.Store(&p) }

// proxyCommandPath resolves the program of a proxy command by the policy.
func (s *Connector) proxyCommandPath(words []string) (string, error) {
	p := s.ssh.proxyCommands.Load()
	path, err := p.Program(words[0])
	if err != nil {
		var na *jobs.NotAllowedError
		if errors.As(err, &na) {
			return "", fmt.Errorf("program %q may not run here as a proxy command: pgrelay runs only the programs of "+
				"its command allowlist (--allow-command or %s on the server; now: %s); to allow it, start the server with --allow-command %s",
				words[0], jobs.AllowCommandsEnv, listOrNone(na.Allowed), words[0])
		}
		return "", err
	}
	return path, nil
}

func listOrNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	s := xs[0]
	for _, x := range xs[1:] {
		s += ", " + x
	}
	return s
}

// checkSSHSettings refuses SSH settings this server cannot honour: a proxy
// command whose program is not allowed, certificate logins without a CA
// or as a hop user the CA's principals leave out.
func (s *Connector) checkSSHSettings(ctx context.Context, spec *connection.Spec) error {
	t := spec.Tunnel
	if t == nil {
		return nil
	}
	var probs []fielderr.Problem
	if len(t.ProxyCommand) > 0 {
		if _, err := s.proxyCommandPath(t.ProxyCommand); err != nil {
			probs = append(probs, fielderr.Problem{Field: "ssh_tunnel.proxy_command", Problem: err.Error()})
		}
	}
	if t.Auth == connection.SSHAuthCertificate {
		if _, err := s.caSigner(ctx); err != nil {
			probs = append(probs, fielderr.Problem{Field: "ssh_tunnel.auth", Problem: err.Error()})
		} else if p, err := s.caPrincipals(ctx); err != nil {
			probs = append(probs, fielderr.Problem{Field: "ssh_tunnel.auth", Problem: err.Error()})
		} else {
			probs = append(probs, principalProblems(spec, p)...)
		}
	}
	if len(probs) > 0 {
		return &ValidationError{Subject: fielderr.Connection, Problems: probs}
	}
	return nil
}

// hostTrust is the host trust of a connection's hops: its own host
// authorities and the server's known_hosts.
func (s *Connector) hostTrust(t *connection.Tunnel) sshkey.HostTrust {
	var own sshkey.HostTrust
	if t != nil {
		for _, line := range t.HostAuthorities {
			if ls, err := sshkey.ParseHostAuthorities(line); err == nil {
				own.Lines = append(own.Lines, ls...)
			}
		}
	}
	return own.Merge(s.ssh.knownHosts)
}

// firstDial returns how the first hop of spec is reached: a TCP connection
// under the network policy, or the proxy command's standard input and
// output (the command does its own networking, out of the policy's sight).
func (s *Connector) firstDial(spec *connection.Spec) (func(ctx context.Context, network, addr string) (net.Conn, error), error) {
	t := spec.Tunnel
	if len(t.ProxyCommand) == 0 {
		return s.network.DialContext, nil
	}
	path, err := s.proxyCommandPath(t.ProxyCommand)
	if err != nil {
		return nil, fmt.Errorf("connection %s: proxy command: %w", spec.Name, err)
	}
	pc := tunnel.ProxyCommand{Path: path, Args: t.ProxyCommand[1:], Env: childenv.Clean(os.Environ())}
	if ra := s.ssh.proxyCommands.Load().RunAs; ra != nil {
		// Whoever saves a connection chooses the command's arguments: it
		// runs as the user command steps run as, not as pgrelay (root,
		// to switch users), which would give it the data dir.
		pc.Credential, pc.Env, pc.Dir = ra.Credential(), ra.ChildEnv(pc.Env), ra.ChildDir()
	}
	return pc.Dial, nil
}

// forwardTarget is where hop i of spec forwards to: the next hop, or from
// the last one the database; as a permitopen value.
func forwardTarget(spec *connection.Spec, i int) string {
	hops := spec.Hops()
	if i+1 < len(hops) {
		return sshkey.PermitOpen(hops[i+1].Host, hops[i+1].Port)
	}
	return sshkey.PermitOpen(spec.Host, spec.Port)
}

// HopKeyLines are the authorized_keys lines of one hop.
type HopKeyLines struct {
	// Hop is the hop's place, from 1.
	Hop  int    `json:"hop"`
	Host string `json:"host"`
	Port int    `json:"port"`
	User string `json:"user"`
	// Line is the restricted authorized_keys line to install on the hop:
	// forwarding only to the next hop (the last hop: to the database).
	Line string `json:"line"`
	// Old is, during a key rotation, the current key's line with
	// expiry-time="…Z" (UTC: OpenSSH 8.5 and later; before 8.5 the time
	// goes without Z in the host's local standard time, as the setup
	// script writes it), to replace the line installed now; empty for a
	// hop given its own key during the rotation, which has nothing to
	// rotate yet.
	Old string `json:"old_line,omitempty"`
	// OwnKey is true when Line is the hop's own key (own_key) rather than
	// the connection's.
	OwnKey bool `json:"own_key,omitempty"`
	// Fingerprint is the SHA256 fingerprint of Line's key.
	Fingerprint string `json:"fingerprint"`
}

// hopKeyLines returns the restricted line of c's key for each hop.
func hopKeyLines(c *store.Connection) ([]HopKeyLines, error) {
	if _, err := publicKeyLine(c, false); err != nil {
		return nil, err
	}
	return keyLinesFor(c, c.SSHPublicKey)
}

// keyLinesFor returns the restricted line of pubLine (authorized_keys
// format) for each hop of c; a hop with its own key pair gets that key's
// line instead.
func keyLinesFor(c *store.Connection, pubLine string) ([]HopKeyLines, error) {
	pub, err := sshkey.ParsePublic(pubLine)
	if err != nil {
		return nil, fmt.Errorf("connection %s: public key: %w", c.Spec.Name, err)
	}
	hops := c.Spec.Hops()
	var out []HopKeyLines
	for i, h := range hops {
		k, own := pub, false
		if hk := ownKeyOf(c, hops, i); hk != nil {
			if k, err = sshkey.ParsePublic(hk.PublicKey); err != nil {
				return nil, fmt.Errorf("connection %s: public key of hop %s: %w", c.Spec.Name, hk.Hop, err)
			}
			own = true
		}
		out = append(out, HopKeyLines{Hop: i + 1, Host: h.Host, Port: h.Port, User: h.User, OwnKey: own,
			Fingerprint: sshkey.Fingerprint(k),
			Line:        sshkey.RestrictedTo(k, sshkey.Comment(c.Spec.Name), forwardTarget(&c.Spec, i))})
	}
	return out, nil
}

// HopKeys returns the restricted authorized_keys line of each of the
// connection's hops, in order.
func (s *Service) HopKeys(ctx context.Context, name string) ([]HopKeyLines, error) {
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	return hopKeyLines(c)
}
