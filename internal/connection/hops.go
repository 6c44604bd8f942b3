package connection

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// Hop is one SSH host of a connection's chain. The first hop is the one
// pgrelay connects to (Tunnel's Host, Port and User); each further hop is
// reached through a direct-tcpip channel of the hop before it, and the
// last one forwards to the database. A hop logs in with the connection's
// key pair (or a certificate of it) unless it has its own (OwnKey), and
// has its own host key pins.
type Hop struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	User string `json:"user"`
	// KnownHost, given on create or update, is the hop's host key to pin at
	// once (as Tunnel.KnownHost). Input only: empty keeps the pins.
	KnownHost string `json:"known_host,omitempty"`
	// OwnKey gives the hop a key pair of its own, which pgrelay generates
	// (of the tunnel's key type) and keeps while the hop (the same
	// user@host:port) stays: the hop then authorizes that key instead of
	// the connection's (with certificate logins, the own key is the one
	// certified). Only hops after the first may have one: the first hop
	// logs in with the connection's key pair.
	OwnKey bool `json:"own_key,omitempty"`
}

// Addr is the hop's "host:port" (IPv6 literals bracketed).
func (h Hop) Addr() string { return net.JoinHostPort(h.Host, strconv.Itoa(h.Port)) }

// String is "user@host:port".
func (h Hop) String() string { return h.User + "@" + h.Addr() }

// MaxHops is the longest chain of SSH hops a connection may have.
const MaxHops = 8

// SSHAuth is how pgrelay logs in to the SSH hops.
type SSHAuth string

// SSH login methods.
const (
	// SSHAuthKey logs in with the connection's key pair, whose public key
	// is installed in each hop's authorized_keys.
	SSHAuthKey SSHAuth = "key"
	// SSHAuthCertificate logs in with a certificate of the connection's key,
	// signed for each tunnel by pgrelay's SSH CA (`pgrelay ssh-ca init`),
	// which the hops trust with TrustedUserCAKeys: no authorized_keys edit.
	SSHAuthCertificate SSHAuth = "certificate"
)

// Hops returns every SSH hop of the connection in the order they are
// dialled: the first (Tunnel's Host, Port, User and KnownHost), then
// Tunnel.Next. Nil for a direct connection.
func (s *Spec) Hops() []Hop {
	if s.Tunnel == nil {
		return nil
	}
	return s.Tunnel.Hops()
}

// Hops returns every hop, the first one (t's own) first.
func (t *Tunnel) Hops() []Hop {
	out := make([]Hop, 0, 1+len(t.Next))
	out = append(out, Hop{Host: t.Host, Port: t.Port, User: t.User, KnownHost: t.KnownHost})
	return append(out, t.Next...)
}

// SetHops makes hops the connection's chain: the first becomes Tunnel's
// Host, Port, User and KnownHost, the rest Tunnel.Next. An empty list
// removes the tunnel; a tunnel is added (with defaults to apply) when
// there was none.
func (s *Spec) SetHops(hops []Hop) {
	if len(hops) == 0 {
		s.Tunnel = nil
		return
	}
	if s.Tunnel == nil {
		s.Tunnel = &Tunnel{}
	}
	t := s.Tunnel
	t.Host, t.Port, t.User, t.KnownHost = hops[0].Host, hops[0].Port, hops[0].User, hops[0].KnownHost
	t.Next = append([]Hop(nil), hops[1:]...)
}

// ParseHop reads a hop written as [user@]host[:port], as ssh -J does
// ("dbt@bastion.example.com:2222", "jump@[2001:db8::1]:22"). The port
// defaults to 22; a hop without user is refused (pgrelay has no default
// user to log in as).
func ParseHop(s string) (Hop, error) {
	const accepted = "accepted is user@host or user@host:port, e.g. dbtcloud@bastion.example.com:22 (IPv6 in brackets: jump@[2001:db8::1]:22)"
	s = strings.TrimSpace(s)
	user, rest, ok := strings.Cut(s, "@")
	if !ok || user == "" {
		return Hop{}, fmt.Errorf("%q has no user: %s", s, accepted)
	}
	if rest == "" {
		return Hop{}, fmt.Errorf("%q has no host: %s", s, accepted)
	}
	h := Hop{User: user, Port: DefaultSSHPort}
	switch {
	case strings.HasPrefix(rest, "["):
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			if strings.HasSuffix(rest, "]") {
				h.Host = strings.Trim(rest, "[]")
				return h, nil
			}
			return Hop{}, fmt.Errorf("%q: %s", s, accepted)
		}
		h.Host = host
		if h.Port, err = parseHopPort(port); err != nil {
			return Hop{}, fmt.Errorf("%q: %v", s, err)
		}
	case strings.Count(rest, ":") == 1:
		host, port, _ := strings.Cut(rest, ":")
		h.Host = host
		var err error
		if h.Port, err = parseHopPort(port); err != nil {
			return Hop{}, fmt.Errorf("%q: %v", s, err)
		}
	case strings.Count(rest, ":") > 1:
		return Hop{}, fmt.Errorf("%q: write an IPv6 address in brackets, e.g. %s@[%s]:22", s, user, rest)
	default:
		h.Host = rest
	}
	return h, nil
}

func parseHopPort(p string) (int, error) {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", p)
	}
	return n, nil
}

// Limits of a proxy command.
const (
	// MaxProxyCommandArgs is the most words (program and arguments) a proxy
	// command may have.
	MaxProxyCommandArgs = 64
	// MaxProxyCommandLen is the longest proxy command, all words together,
	// in bytes.
	MaxProxyCommandLen = 4096
)

// validateProxyCommand checks the words of a proxy command. Whether its
// program may run is the server's decision (its command allowlist), made
// when the connection is saved and when it is opened.
func validateProxyCommand(words []string) error {
	if len(words) == 0 {
		return nil
	}
	if len(words) > MaxProxyCommandArgs {
		return fmt.Errorf("%d words: at most %d", len(words), MaxProxyCommandArgs)
	}
	total := 0
	for i, w := range words {
		total += len(w)
		if !utf8.ValidString(w) || strings.ContainsRune(w, 0) {
			return fmt.Errorf("word %d must be valid UTF-8 without NUL characters", i+1)
		}
	}
	if total > MaxProxyCommandLen {
		return fmt.Errorf("too long (%d bytes): at most %d", total, MaxProxyCommandLen)
	}
	prog := words[0]
	switch {
	case strings.TrimSpace(prog) == "":
		return errors.New("the program is empty: give a program and its arguments, e.g. socat STDIO TCP:bastion.internal:22")
	case strings.ContainsAny(prog, " \t") && !strings.HasPrefix(prog, "/"):
		return fmt.Errorf("program %q contains white space: the command runs without a shell, so give the program and each argument as separate words", prog)
	case strings.ContainsRune(prog, '/') && !strings.HasPrefix(prog, "/"):
		return fmt.Errorf("program %q: give a program name looked up on PATH (socat) or an absolute path (/usr/bin/socat), not a relative path", prog)
	}
	return nil
}

// ValidateSSHUser checks a bastion user name (a hop's user, and so a
// principal of pgrelay's SSH CA): 1 to 32 letters, digits, '.', '_' and
// '-', not starting with '.' or '-', optionally ending in '$'.
func ValidateSSHUser(u string) error {
	switch {
	case u == "":
		return errors.New("required: the user on the bastion, e.g. dbtcloud")
	case len(u) > 32 || !sshUserRE.MatchString(u):
		return fmt.Errorf("%q is not accepted: a bastion user name of at most 32 letters, digits, '.', '_' and '-'", u)
	}
	return nil
}

// validateHops adds the problems of the tunnel's hops beyond the first,
// its proxy command, login method and host authorities.
func (t *Tunnel) validateHops(add func(field string, err error)) {
	if len(t.Next)+1 > MaxHops {
		add("ssh_hops", fmt.Errorf("%d hops: at most %d", len(t.Next)+1, MaxHops))
	}
	hops := t.Hops()
	for i, h := range t.Next {
		// Hops are numbered from 0 in the API (ssh_hops.1 is the second).
		p := fmt.Sprintf("ssh_hops.%d.", i+1)
		add(p+"host", ValidateHost(h.Host))
		// A hop is told apart from the others by its user@host:port (its
		// own key pair, kept while a hop of that identity stays), so the
		// same one twice could not be given its own key, and its
		// authorized_keys would need two lines of one key, of which sshd
		// reads the first only: the chain failed at forward.
		for j := range hops[:i+1] {
			if e := hops[j]; e.User == h.User && e.Port == h.Port && strings.EqualFold(e.Host, h.Host) {
				add(p+"host", fmt.Errorf("%s is hop %d again: accepted is a chain that passes each user@host:port once; remove the repeated hop", h, j+1))
				break
			}
		}
		add(p+"port", validatePort(h.Port))
		add(p+"user", ValidateSSHUser(h.User))
		if strings.TrimSpace(h.KnownHost) != "" {
			_, err := sshkey.ParseKnownHosts(h.KnownHost, h.Host, h.Port)
			add(p+"known_host", err)
		}
	}
	add("ssh_tunnel.proxy_command", validateProxyCommand(t.ProxyCommand))
	switch t.Auth {
	case "", SSHAuthKey, SSHAuthCertificate:
	default:
		add("ssh_tunnel.auth", fmt.Errorf("%q is not accepted: use key (the connection's key pair in authorized_keys, the default) "+
			"or certificate (a short-lived certificate signed by pgrelay's SSH CA)", t.Auth))
	}
	if len(t.HostAuthorities) > 0 {
		_, err := sshkey.ParseHostAuthorities(strings.Join(t.HostAuthorities, "\n"))
		add("ssh_tunnel.host_authorities", err)
	}
}
