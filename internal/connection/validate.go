package connection

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// Limits.
const (
	MaxNameLen       = 63
	MaxIdentifierLen = 63 // PostgreSQL's NAMEDATALEN - 1, in bytes
	MaxThreads       = 256
	MinKeepalive     = 100 * time.Millisecond
	MaxKeepalive     = time.Hour
	MaxKeepaliveMax  = 1000
	// MinHealthCheckInterval and MaxHealthCheckInterval bound a
	// connection's scheduled tests (0 turns them off).
	MinHealthCheckInterval = 10 * time.Second
	MaxHealthCheckInterval = 7 * 24 * time.Hour
)

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	dnsLabelRE = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$`)
	sshUserRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$`)
)

// ValidateName checks a connection name.
func ValidateName(name string) error {
	switch {
	case name == "":
		return errors.New("required: lower-case letters, digits, '-' and '_'")
	case len(name) > MaxNameLen:
		return fmt.Errorf("too long (%d characters): at most %d", len(name), MaxNameLen)
	case !nameRE.MatchString(name):
		return fmt.Errorf("%q is not accepted: use lower-case letters, digits, '-' and '_', starting with a letter or digit", name)
	}
	return nil
}

// ValidateHost checks a host name: a DNS name, an IPv4 literal or an IPv6
// literal (without brackets), and no port.
func ValidateHost(host string) error {
	if host == "" {
		return errors.New("required: a DNS name, an IPv4 address or an IPv6 address")
	}
	if strings.TrimSpace(host) != host || strings.ContainsAny(host, " \t\r\n") {
		return fmt.Errorf("%q contains white space: accepted is a DNS name, an IPv4 address or an IPv6 address", host)
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		return fmt.Errorf("%q: write IPv6 addresses without brackets, e.g. %s", host, strings.Trim(host, "[]"))
	}
	if strings.Contains(host, "://") {
		return fmt.Errorf("%q looks like a URL: give only the host name, e.g. db.example.com", host)
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if addr.Zone() != "" {
			return fmt.Errorf("%q: IPv6 zones are not accepted", host)
		}
		return nil
	}
	if strings.Count(host, ":") == 1 {
		return fmt.Errorf("%q includes a port: give the host alone and the port in its own field", host)
	}
	if strings.Contains(host, ":") {
		return fmt.Errorf("%q is not a valid IPv6 address", host)
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) > 253 {
		return fmt.Errorf("host name is %d characters long: at most 253", len(name))
	}
	for label := range strings.SplitSeq(name, ".") {
		if len(label) > 63 || !dnsLabelRE.MatchString(label) {
			return fmt.Errorf("%q is not a valid host name: accepted is a DNS name (letters, digits, '-' in dot-separated labels of at most 63 characters), an IPv4 address or an IPv6 address", host)
		}
	}
	return nil
}

func validatePort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("%d is out of range: accepted is 1 to 65535", p)
	}
	return nil
}

func validateIdentifier(v, what string, required bool) error {
	switch {
	case v == "" && required:
		return fmt.Errorf("required: the %s", what)
	case len(v) > MaxIdentifierLen:
		return fmt.Errorf("too long (%d bytes): PostgreSQL names are at most %d bytes", len(v), MaxIdentifierLen)
	case !utf8.ValidString(v) || strings.ContainsRune(v, 0):
		return errors.New("must be valid UTF-8 without NUL characters")
	}
	return nil
}

// ParseCertificates parses PEM text holding one or more CA certificates.
func ParseCertificates(pemText string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	// A byte order mark (as Windows editors write one) would hide the
	// first block from pem.Decode, which looks for it at a line start.
	rest := []byte(strings.TrimPrefix(pemText, "\ufeff"))
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("contains a PEM block of type %q: only CERTIFICATE blocks are accepted", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found: accepted is a PEM file with one or more -----BEGIN CERTIFICATE----- blocks")
	}
	return certs, nil
}

// Validate checks the spec after ApplyDefaults and reports every problem at
// once as a *fielderr.Error, or nil.
func (s *Spec) Validate() error {
	var probs []fielderr.Problem
	add := func(field string, err error) {
		if err != nil {
			probs = append(probs, fielderr.Problem{Field: field, Problem: err.Error()})
		}
	}
	add("name", ValidateName(s.Name))
	if !slices.Contains(Flavors(), s.Flavor) {
		add("flavor", fmt.Errorf("%q is not accepted: use postgres, alloydb or lakebase", s.Flavor))
	}
	add("host", ValidateHost(s.Host))
	add("port", validatePort(s.Port))
	add("database", validateIdentifier(s.Database, "database name, e.g. analytics", true))
	add("user", validateIdentifier(s.User, "database user name", true))
	if len(s.Password.Reveal()) > 4096 {
		add("password", errors.New("longer than 4096 bytes"))
	} else if strings.ContainsRune(s.Password.Reveal(), 0) {
		add("password", errors.New("must not contain NUL characters"))
	}
	switch {
	case !slices.Contains(SSLModes(), s.SSLMode):
		add("sslmode", fmt.Errorf("%q is not accepted: use disable, allow, prefer, require, verify-ca or verify-full", s.SSLMode))
	case s.Flavor == Lakebase && !s.SSLMode.Encrypts():
		add("sslmode", fmt.Errorf("%q is not accepted for Lakebase, which only accepts encrypted connections: use require, verify-ca or verify-full", s.SSLMode))
	}
	if s.SSLRootCert != "" {
		if !s.SSLMode.Verifies() {
			add("ssl_root_cert", fmt.Errorf("a CA certificate is used only with sslmode verify-ca or verify-full (sslmode is %q)", s.SSLMode))
		} else if _, err := ParseCertificates(s.SSLRootCert); err != nil {
			add("ssl_root_cert", err)
		}
	}
	add("require_auth", validateRequireAuth(s.RequireAuth))
	add("pooler", validatePooler(s.Pooler))
	add("schema", validateIdentifier(s.Schema, "schema", false))
	add("role", validateIdentifier(s.Role, "role", false))
	if s.Role != "" && s.EffectivePooler() != PoolerNone {
		add("role", fmt.Errorf("not accepted with a connection pooler (pooler %s), which does not pass a role on: give the user the role with ALTER ROLE %s SET role = ..., or connect without the pooler", s.EffectivePooler(), s.User))
	}
	if s.Threads < 1 || s.Threads > MaxThreads {
		add("threads", fmt.Errorf("%d is out of range: accepted is 1 to %d", s.Threads, MaxThreads))
	}
	if d := s.HealthCheckInterval.Duration(); d != 0 && (d < MinHealthCheckInterval || d > MaxHealthCheckInterval) {
		add("health_check_interval", fmt.Errorf("%s is out of range: accepted is 0 (no scheduled tests) or %s to %s, e.g. 15m",
			d, MinHealthCheckInterval, MaxHealthCheckInterval))
	}
	if t := s.Tunnel; t != nil {
		add("ssh_tunnel.host", ValidateHost(t.Host))
		add("ssh_tunnel.port", validatePort(t.Port))
		add("ssh_tunnel.user", ValidateSSHUser(t.User))
		if t.KeyType != "ed25519" && t.KeyType != "rsa" {
			add("ssh_tunnel.key_type", fmt.Errorf("%q is not accepted: use ed25519 (default) or rsa", t.KeyType))
		}
		if d := time.Duration(t.KeepaliveInterval); d < MinKeepalive || d > MaxKeepalive {
			add("ssh_tunnel.keepalive_interval", fmt.Errorf("%s is out of range: accepted is %s to %s", d, MinKeepalive, MaxKeepalive))
		}
		if t.KeepaliveCountMax < 1 || t.KeepaliveCountMax > MaxKeepaliveMax {
			add("ssh_tunnel.keepalive_count_max", fmt.Errorf("%d is out of range: accepted is 1 to %d", t.KeepaliveCountMax, MaxKeepaliveMax))
		}
		if strings.TrimSpace(t.KnownHost) != "" {
			_, err := sshkey.ParseKnownHosts(t.KnownHost, t.Host, t.Port)
			add("ssh_tunnel.known_host", err)
		}
		t.validateHops(add)
	}
	probs = s.validateAuth(probs)
	if len(probs) == 0 {
		return nil
	}
	return fielderr.New(fielderr.Connection, probs...)
}
