package connection

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/pgrelay/pgrelay/internal/fielderr"
)

// Endpoint is where a connection's stored credentials may be sent: the
// database's host, port and user, and the SSH hop in front of it. A stored
// password (or any stored credential) is only ever sent to the endpoint it
// was saved for; changing the endpoint needs the credential again.
type Endpoint struct {
	Host string
	Port int
	User string
	// Hops are the SSH hops the database is reached through, in order.
	Hops []HopEndpoint
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
	e := Endpoint{Host: normHost(s.Host), Port: s.Port, User: s.User}
	for _, h := range s.Hops() {
		e.Hops = append(e.Hops, HopEndpoint{Host: normHost(h.Host), Port: h.Port, User: h.User})
	}
	return e
}

func normHost(h string) string { return strings.ToLower(strings.TrimSpace(h)) }

// Equal reports whether e and o are the same endpoint.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.Host == o.Host && e.Port == o.Port && e.User == o.User && slices.Equal(e.Hops, o.Hops)
}

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

// Key is the endpoint's canonical form, bound into the associated data of
// sealed credentials so that they open only for this endpoint.
func (e Endpoint) Key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "db=%q:%d:%q", e.Host, e.Port, e.User)
	for _, h := range e.Hops {
		fmt.Fprintf(&b, ";hop=%q:%d:%q", h.Host, h.Port, h.User)
	}
	return b.String()
}

// Changes names what differs between e (saved) and o (new), for a message
// such as "host db-a → db-b".
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
	return out
}

// PasswordAgainProblem is the field problem given when a connection's
// endpoint changes without its password being given again.
func PasswordAgainProblem(saved, next Endpoint) fielderr.Problem {
	return fielderr.Problem{Field: "password", Problem: fmt.Sprintf(
		"enter the password again: the endpoint changed (%s), and a stored password is only sent to the endpoint it was saved for",
		strings.Join(saved.Changes(next), ", "))}
}
