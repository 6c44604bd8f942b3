package connection

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/pgrelay/pgrelay/internal/fielderr"
)

// Endpoint is where a connection's stored credentials may be sent: the
// database's host, port and user, and the SSH hops in front of it, with
// how each is told from an impostor on the way (Trust). A stored password
// (or any stored credential) is only ever sent to the endpoint it was
// saved for: changing the address, or verifying it less strictly, needs
// the credential again (Covers).
type Endpoint struct {
	Host string
	Port int
	User string
	// Hops are the SSH hops the database is reached through, in order.
	Hops []HopEndpoint
	// Trust is how the endpoint is verified.
	Trust Trust
}

// Trust is how a connection tells its endpoint from whoever else might
// answer at its address: the database's TLS verification and the
// authentication methods it accepts, the route to the first SSH hop (a
// proxy command reaches a host of its own choosing), and the host CAs
// trusted for the hops. Host key pins are not part of it: they change only
// to a key the hop itself presented (trust-host-key) or one given as a pin.
type Trust struct {
	SSLMode SSLMode
	// RootCert is the SHA-256 of the spec's CA certificates; empty means
	// the system roots.
	RootCert string
	// RequireAuth is the effective require_auth policy.
	RequireAuth     string
	ProxyCommand    []string
	HostAuthorities []string
}

// HopEndpoint is one SSH hop of an Endpoint.
type HopEndpoint struct {
	Host string
	Port int
	User string
}

// Endpoint returns the spec's endpoint. Host names compare without regard
// to case or surrounding spaces, as DNS does.
func (s *Spec) Endpoint() Endpoint {
	e := Endpoint{Host: normHost(s.Host), Port: s.Port, User: s.User,
		Trust: Trust{SSLMode: s.SSLMode, RequireAuth: s.EffectiveRequireAuth()}}
	if s.SSLRootCert != "" {
		e.Trust.RootCert = rootCertSum(s.SSLRootCert)
	}
	for _, h := range s.Hops() {
		e.Hops = append(e.Hops, HopEndpoint{Host: normHost(h.Host), Port: h.Port, User: h.User})
	}
	if s.Tunnel != nil {
		e.Trust.ProxyCommand = slices.Clone(s.Tunnel.ProxyCommand)
		e.Trust.HostAuthorities = slices.Clone(s.Tunnel.HostAuthorities)
	}
	return e
}

// rootCertSum identifies CA certificate text by its certificates, so that
// line endings and spacing (a browser sends CRLF) do not count as another
// CA.
func rootCertSum(pemText string) string {
	h := sha256.New()
	certs, err := ParseCertificates(pemText)
	if err != nil || len(certs) == 0 {
		h.Write([]byte(strings.Join(strings.Fields(pemText), "\n")))
	}
	for _, c := range certs {
		h.Write(c.Raw)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func normHost(h string) string { return strings.ToLower(strings.TrimSpace(h)) }

// SameAddress reports whether e and o are the same host, port and user
// through the same hops, however verified.
func (e Endpoint) SameAddress(o Endpoint) bool {
	return e.Host == o.Host && e.Port == o.Port && e.User == o.User && slices.Equal(e.Hops, o.Hops)
}

// Covers reports whether a credential saved for e may be sent to next: the
// same address, verified no less strictly (Changes is empty).
func (e Endpoint) Covers(next Endpoint) bool { return len(e.Changes(next)) == 0 }

// String renders the endpoint as user@host:port, followed by "via" and each
// hop, e.g. "dbt@db.internal:5432 via dbtcloud@bastion.example.com:22".
func (e Endpoint) String() string {
	var b strings.Builder
	b.WriteString(e.User + "@" + net.JoinHostPort(e.Host, strconv.Itoa(e.Port)))
	for _, h := range e.Hops {
		b.WriteString(" via " + h.User + "@" + net.JoinHostPort(h.Host, strconv.Itoa(h.Port)))
	}
	return b.String()
}

// Key is the endpoint's address in canonical form, bound into the
// associated data of sealed credentials so that they open only for this
// address. How the address is verified (Trust) is not part of it, so that
// credentials sealed before it was checked still open; Covers checks it
// whenever a connection changes or a draft borrows a saved credential.
func (e Endpoint) Key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "db=%q:%d:%q", e.Host, e.Port, e.User)
	for _, h := range e.Hops {
		fmt.Fprintf(&b, ";hop=%q:%d:%q", h.Host, h.Port, h.User)
	}
	return b.String()
}

// Changes names what differs between the address of e (saved) and o
// (new), and how o is verified less strictly than e, for a message such as
// "host db-a → db-b" or "sslmode verify-full → disable".
func (e Endpoint) Changes(o Endpoint) []string {
	var out []string
	if e.Host != o.Host {
		out = append(out, fmt.Sprintf("host %s → %s", e.Host, o.Host))
	}
	if e.Port != o.Port {
		out = append(out, fmt.Sprintf("port %d → %d", e.Port, o.Port))
	}
	if e.User != o.User {
		out = append(out, fmt.Sprintf("user %s → %s", e.User, o.User))
	}
	if !slices.Equal(e.Hops, o.Hops) {
		hops := func(hs []HopEndpoint) string {
			if len(hs) == 0 {
				return "none"
			}
			parts := make([]string, len(hs))
			for i, h := range hs {
				parts[i] = h.User + "@" + net.JoinHostPort(h.Host, strconv.Itoa(h.Port))
			}
			return strings.Join(parts, ", ")
		}
		out = append(out, fmt.Sprintf("SSH bastion %s → %s", hops(e.Hops), hops(o.Hops)))
	}
	return append(out, e.Trust.weakerIn(o.Trust)...)
}

// weakerIn names how next verifies the endpoint less strictly than t: a
// lower sslmode, another CA certificate for a verifying mode, an
// authentication method accepted that was refused (unless the server is
// proven to be the endpoint as before), another proxy command, a host CA
// added or a revoked key no longer revoked.
func (t Trust) weakerIn(next Trust) []string {
	var out []string
	modes := SSLModes()
	if slices.Index(modes, next.SSLMode) < slices.Index(modes, t.SSLMode) {
		out = append(out, fmt.Sprintf("sslmode %s → %s", t.SSLMode, next.SSLMode))
	} else if t.SSLMode.Verifies() && next.SSLMode.Verifies() && t.RootCert != next.RootCert {
		out = append(out, "the CA certificate that verifies the server (ssl_root_cert)")
	}
	// Any method is safe with a server proven to be the endpoint: by
	// verify-full against the public CAs (a certificate for its very
	// name), or as it was proven before (the same CA given with the
	// connection). A CA given anew is anyone's: whoever holds it would be
	// sent what is accepted; and verify-ca against the public CAs proves
	// nothing (any public certificate passes).
	proven := next.SSLMode == SSLVerifyFull && next.RootCert == "" ||
		next.SSLMode.Verifies() && t.SSLMode.Verifies() && next.RootCert != "" && next.RootCert == t.RootCert
	var accepted []string
	for _, m := range requireAuthMethods {
		if !proven && policyAccepts(next.RequireAuth, m) && !policyAccepts(t.RequireAuth, m) {
			accepted = append(accepted, m)
		}
	}
	if len(accepted) > 0 {
		why := "require_auth now accepts " + strings.Join(accepted, ", ")
		if t.SSLMode != next.SSLMode || t.RootCert != next.RootCert {
			// Most often not a require_auth given, but the default's
			// turn: it accepts a clear-text password once the server's
			// certificate is verified, here against a CA given now.
			reason := "a CA certificate given now is not yet proven: whoever holds its key would be sent the password"
			if next.RootCert == "" {
				reason = "verify-ca against the public CAs proves nothing: any public certificate passes"
			}
			why += fmt.Sprintf(" (with sslmode %s the default require_auth accepts it from a server whose certificate is verified, but %s)",
				next.SSLMode, reason)
		}
		out = append(out, why)
	}
	if !slices.Equal(t.ProxyCommand, next.ProxyCommand) {
		out = append(out, "the SSH proxy command")
	}
	before, after := authorityLines(t.HostAuthorities), authorityLines(next.HostAuthorities)
	for _, l := range after {
		if !slices.Contains(before, l) && !strings.HasPrefix(l, "@revoked ") {
			out = append(out, "a host CA trusted for the SSH hops (host_authorities)")
			break
		}
	}
	for _, l := range before {
		if strings.HasPrefix(l, "@revoked ") && !slices.Contains(after, l) {
			out = append(out, "a key no longer revoked for the SSH hops (host_authorities)")
			break
		}
	}
	return out
}

// authorityLines are the known_hosts lines of host_authorities entries
// (an entry may hold several), blanks and comments dropped and white space
// folded, so that they compare line by line.
func authorityLines(entries []string) []string {
	var out []string
	for _, e := range entries {
		for l := range strings.SplitSeq(e, "\n") {
			l = strings.Join(strings.Fields(l), " ")
			if l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, strings.ToLower(l[:markerEnd(l)])+l[markerEnd(l):])
			}
		}
	}
	return out
}

// markerEnd is the length of a line's @marker ("" when it has none), so
// that the marker compares without regard to case.
func markerEnd(l string) int {
	if !strings.HasPrefix(l, "@") {
		return 0
	}
	if i := strings.IndexByte(l, ' '); i > 0 {
		return i
	}
	return len(l)
}

// PasswordAgainProblem is the field problem given when a connection's
// endpoint changes without its password being given again.
func PasswordAgainProblem(saved, next Endpoint) fielderr.Problem {
	return fielderr.Problem{Field: "password", Problem: fmt.Sprintf(
		"enter the password again: the endpoint or how it is verified changed (%s), and a stored password is only sent to the endpoint it was saved for",
		strings.Join(saved.Changes(next), ", "))}
}
