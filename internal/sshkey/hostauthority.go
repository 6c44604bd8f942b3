package sshkey

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Marker is the marker of a known_hosts line.
type Marker string

// Markers of known_hosts lines (sshd(8), SSH_KNOWN_HOSTS FILE FORMAT).
const (
	// MarkerNone is a plain line: a host key of the hosts it names.
	MarkerNone Marker = ""
	// MarkerCertAuthority is a host CA: a host certificate it signed is
	// accepted for the hosts the line's patterns match.
	MarkerCertAuthority Marker = "cert-authority"
	// MarkerRevoked is a key that is never accepted, as a host key or as
	// the CA of a host certificate.
	MarkerRevoked Marker = "revoked"
)

// MaxHostAuthorities is the most lines a connection's host authorities may
// have.
const MaxHostAuthorities = 64

// HostAuthoritiesAccepted says what ParseHostAuthorities accepts.
const HostAuthoritiesAccepted = `accepted are known_hosts lines with a marker: "@cert-authority PATTERN KEY" trusts host ` +
	`certificates signed by KEY for the hosts PATTERN matches (e.g. "@cert-authority *.corp.example.com ssh-ed25519 AAAA..."; ` +
	`"[*.corp.example.com]:2222" for another port; "*" for any host), "@revoked PATTERN KEY" refuses KEY; one per line`

// KnownHostLine is one parsed known_hosts line.
type KnownHostLine struct {
	Marker Marker
	// Patterns are the line's host patterns ("*.example.com",
	// "[10.0.0.*]:2222", "!bad.example.com"), as ssh reads known_hosts:
	// '*' and '?' are wildcards (in the port too: "[*.example.com]:*"),
	// '!' negates, a port other than 22 is written [host]:port.
	Patterns []string
	// Key is the host key or CA key.
	Key ssh.PublicKey
}

// String renders the line as known_hosts has it (without a comment).
func (l KnownHostLine) String() string {
	var b strings.Builder
	if l.Marker != MarkerNone {
		b.WriteString("@" + string(l.Marker) + " ")
	}
	b.WriteString(strings.Join(l.Patterns, ",") + " ")
	b.WriteString(strings.TrimSpace(string(ssh.MarshalAuthorizedKey(l.Key))))
	return b.String()
}

// Matches reports whether the line's patterns match the host at host:port
// as ssh matches known_hosts: each pattern against the host's name there
// (host for port 22, else [host]:port), so that "*" matches every host
// on every port while "*.example.com" matches only port 22. Some pattern
// must match and no negated one. Host names compare without regard to
// case.
func (l KnownHostLine) Matches(host string, port int) bool {
	name := strings.ToLower(knownhosts.Normalize(net.JoinHostPort(strings.TrimSuffix(host, "."), strconv.Itoa(port))))
	matched := false
	for _, p := range l.Patterns {
		neg := strings.HasPrefix(p, "!")
		if !wildcardMatch(strings.ToLower(strings.TrimPrefix(p, "!")), name) {
			continue
		}
		if neg {
			return false
		}
		matched = true
	}
	return matched
}

// wildcardMatch matches s against pattern, where '*' is any run of
// characters and '?' any one character (OpenSSH's match_pattern: '*'
// does not stop at dots).
func wildcardMatch(pattern, s string) bool {
	for {
		if pattern == "" {
			return s == ""
		}
		if pattern[0] == '*' {
			rest := pattern[1:]
			for i := 0; i <= len(s); i++ {
				if wildcardMatch(rest, s[i:]) {
					return true
				}
			}
			return false
		}
		if s == "" || (pattern[0] != '?' && pattern[0] != s[0]) {
			return false
		}
		pattern, s = pattern[1:], s[1:]
	}
}

// parseKnownHostLine reads one known_hosts line with x/crypto's parser and
// checks its patterns and key.
func parseKnownHostLineFull(line string) (KnownHostLine, error) {
	marker, hosts, key, _, _, err := ssh.ParseKnownHosts([]byte(line))
	if err != nil {
		return KnownHostLine{}, fmt.Errorf("not a known_hosts line: %w", err)
	}
	l := KnownHostLine{Marker: Marker(marker), Key: key}
	switch l.Marker {
	case MarkerNone, MarkerCertAuthority, MarkerRevoked:
	default:
		return KnownHostLine{}, fmt.Errorf("marker @%s is not accepted: use @cert-authority or @revoked", marker)
	}
	for _, h := range hosts {
		switch {
		case strings.HasPrefix(h, "|"):
			return KnownHostLine{}, errors.New("hashed host names (|1|...) are not accepted: give the host name or a pattern")
		case strings.TrimPrefix(h, "!") == "":
			return KnownHostLine{}, errors.New("an empty host pattern (a lone \"!\") is not accepted")
		case strings.HasPrefix(strings.TrimPrefix(h, "!"), "["):
			if _, _, err := net.SplitHostPort(strings.TrimPrefix(h, "!")); err != nil {
				return KnownHostLine{}, fmt.Errorf("host pattern %q: write a port as [host]:port", h)
			}
		}
		l.Patterns = append(l.Patterns, h)
	}
	if len(l.Patterns) == 0 {
		return KnownHostLine{}, errors.New("no host pattern: give one before the key, e.g. * for any host")
	}
	if _, ok := key.(*ssh.Certificate); ok {
		return KnownHostLine{}, errors.New("the key is a certificate: give the CA's plain public key")
	}
	if err := checkHostKey(key); err != nil {
		return KnownHostLine{}, err
	}
	return l, nil
}

// ParseHostAuthorities reads a connection's host authorities: known_hosts
// lines with the marker @cert-authority or @revoked, one per line (blank
// lines and # comments skipped). A line without marker is refused: pin
// plain host keys with known_host instead.
func ParseHostAuthorities(text string) ([]KnownHostLine, error) {
	if len(text) > MaxKnownHostLen {
		return nil, fmt.Errorf("too long (%d bytes): at most %d bytes", len(text), MaxKnownHostLen)
	}
	var out []KnownHostLine
	var problems []string
	n, lines := 0, 0
	for line := range strings.SplitSeq(text, "\n") {
		n++
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines++
		l, err := parseKnownHostLineFull(line)
		if err == nil && l.Marker == MarkerNone {
			err = errors.New("a plain host key: pin it with known_host (--ssh-known-host) instead, or mark the line @cert-authority or @revoked")
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("line %d: %v", n, err))
			continue
		}
		out = append(out, l)
	}
	if len(problems) > 0 {
		if lines == 1 {
			_, problems[0], _ = strings.Cut(problems[0], ": ")
		}
		return nil, errors.New(strings.Join(problems, "; ") + "; " + HostAuthoritiesAccepted)
	}
	if len(out) > MaxHostAuthorities {
		return nil, fmt.Errorf("%d lines: at most %d", len(out), MaxHostAuthorities)
	}
	return out, nil
}

// ParseKnownHostsFile reads a known_hosts file such as the server's
// default (--ssh-known-hosts): plain lines (host keys of the hosts they
// name), @cert-authority and @revoked lines. Blank lines and # comments
// are skipped; errors name the line.
func ParseKnownHostsFile(data []byte) ([]KnownHostLine, error) {
	var out []KnownHostLine
	var problems []string
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		l, err := parseKnownHostLineFull(line)
		if err != nil {
			problems = append(problems, fmt.Sprintf("line %d: %v", i+1, err))
			continue
		}
		out = append(out, l)
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return out, nil
}

// HostTrust is what decides a hop's host key besides its pins: host CAs,
// revoked keys and known host keys, from a connection's host authorities
// and the server's known_hosts file. The zero value trusts nothing.
type HostTrust struct {
	Lines []KnownHostLine
}

// Merge returns the trust of t and o together.
func (t HostTrust) Merge(o HostTrust) HostTrust {
	lines := make([]KnownHostLine, 0, len(t.Lines)+len(o.Lines))
	return HostTrust{Lines: append(append(lines, t.Lines...), o.Lines...)}
}

// Authorities returns the host CA keys trusted for host:port.
func (t HostTrust) Authorities(host string, port int) []ssh.PublicKey {
	var out []ssh.PublicKey
	for _, l := range t.Lines {
		if l.Marker == MarkerCertAuthority && l.Matches(host, port) {
			out = append(out, l.Key)
		}
	}
	return out
}

// Keys returns the plain host keys known for host:port.
func (t HostTrust) Keys(host string, port int) []ssh.PublicKey {
	var out []ssh.PublicKey
	for _, l := range t.Lines {
		if l.Marker == MarkerNone && l.Matches(host, port) {
			out = append(out, l.Key)
		}
	}
	return out
}

// Revoked reports whether key is revoked. Like x/crypto's knownhosts, a
// revoked key is refused for every host, whatever the line's patterns.
func (t HostTrust) Revoked(key ssh.PublicKey) bool {
	var blob []byte
	if c, ok := key.(*ssh.Certificate); ok {
		blob = c.Key.Marshal()
	} else {
		blob = key.Marshal()
	}
	for _, l := range t.Lines {
		if l.Marker == MarkerRevoked && bytes.Equal(l.Key.Marshal(), blob) {
			return true
		}
	}
	return false
}

// Empty reports whether t has no line.
func (t HostTrust) Empty() bool { return len(t.Lines) == 0 }
