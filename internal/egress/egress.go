// Package egress decides which network addresses pgrelay itself may
// connect to: SSH bastions, databases reached directly, and the HTTPS
// endpoints token credentials are fetched from (Lakebase workspaces,
// AlloyDB's OAuth token endpoint; package credential).
//
// A [Policy] is a list of allowed and denied address prefixes. The most
// specific prefix that holds an address decides (ties between a default
// and a prefix given by the operator go to the operator's); an address no
// prefix holds is allowed. By default link-local addresses (169.254.0.0/16,
// where clouds serve instance metadata and credentials) and AWS's IPv6
// metadata address (fd00:ec2::254/128) are denied, so that a connection
// whose host points there cannot make pgrelay fetch them. To allow only
// some networks, deny everything (0.0.0.0/0, ::/0) and allow those.
//
// The check is made on the address actually dialled: [Policy.DialContext]
// refuses a denied address in the dialer's Control hook, after the name was
// resolved and before the socket connects, so that a name that resolves to
// another address on the second lookup (DNS rebinding) cannot get past it.
// Refusals are [*DeniedError]s.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pgrelay/pgrelay/internal/sockio"
)

// Rule is one prefix of a policy.
type Rule struct {
	// Prefix is the address range.
	Prefix netip.Prefix
	// Allow is true for an allowed range, false for a denied one.
	Allow bool
	// Default marks the built-in denials.
	Default bool
}

// String describes where the rule comes from, e.g. "--deny-network
// 10.0.0.0/8" or "default (link-local and cloud metadata addresses)".
func (r Rule) String() string {
	switch {
	case r.Default:
		return "default (link-local and cloud metadata addresses)"
	case r.Allow:
		return "--allow-network " + r.Prefix.String()
	}
	return "--deny-network " + r.Prefix.String()
}

// DefaultDenied returns the prefixes denied unless a policy allows them:
// IPv4 link-local (cloud metadata services answer on 169.254.169.254) and
// AWS's IPv6 metadata address.
func DefaultDenied() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("fd00:ec2::254/128"),
	}
}

// Policy decides which addresses may be dialled. The nil *Policy is the
// default policy ([DefaultDenied], nothing else). A Policy is immutable
// and safe for concurrent use.
type Policy struct {
	// rules, most specific first; among equal prefixes the operator's
	// before the defaults.
	rules []Rule
}

// New returns a policy of the default denials and the given prefixes. A
// prefix both denied and allowed is an error; a prefix allowed that is one
// of the defaults lifts that default.
func New(deny, allow []netip.Prefix) (*Policy, error) {
	var rules []Rule
	var errs []error
	for _, p := range deny {
		p = p.Masked()
		if slices.ContainsFunc(allow, func(a netip.Prefix) bool { return a.Masked() == p }) {
			errs = append(errs, fmt.Errorf("%s is given to both --deny-network and --allow-network: give it to one", p))
		}
		rules = append(rules, Rule{Prefix: p})
	}
	for _, p := range allow {
		rules = append(rules, Rule{Prefix: p.Masked(), Allow: true})
	}
	for _, p := range DefaultDenied() {
		rules = append(rules, Rule{Prefix: p, Default: true})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	slices.SortStableFunc(rules, func(a, b Rule) int {
		if a.Prefix.Bits() != b.Prefix.Bits() {
			return b.Prefix.Bits() - a.Prefix.Bits()
		}
		switch {
		case a.Default == b.Default:
			return 0
		case b.Default:
			return -1
		}
		return 1
	})
	return &Policy{rules: rules}, nil
}

// ParsePrefix reads a prefix such as 10.0.0.0/8 or fd00::/8, or a single
// address (a prefix of one address).
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil { // no zones
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is not accepted: give an address range in CIDR notation, such as 10.0.0.0/8 or fd00::/8, or a single address", s)
}

// ParsePrefixes reads a list of prefixes (see [ParsePrefix]); empty items
// are skipped.
func ParsePrefixes(items []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range items {
		if strings.TrimSpace(s) == "" {
			continue
		}
		p, err := ParsePrefix(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

// Rules returns the policy's rules, most specific first.
func (p *Policy) Rules() []Rule { return slices.Clone(p.list()) }

func (p *Policy) list() []Rule {
	if p == nil {
		d, _ := New(nil, nil)
		return d.rules
	}
	return p.rules
}

// rule returns the rule that decides ip, and whether one does.
func (p *Policy) rule(ip netip.Addr) (Rule, bool) {
	ip = ip.Unmap().WithZone("")
	for _, r := range p.list() {
		if r.Prefix.Contains(ip) {
			return r, true
		}
	}
	return Rule{}, false
}

// Check returns nil when ip may be dialled, else a [*DeniedError]. host
// is the name the address was resolved from, for the message ("" when the
// address was given as such); port is 0 when not known.
func (p *Policy) Check(host string, ip netip.Addr, port uint16) error {
	r, ok := p.rule(ip)
	if !ok || r.Allow {
		return nil
	}
	return &DeniedError{Host: host, Addr: ip.Unmap().WithZone(""), Port: port, Rule: r}
}

// CheckHostPort checks a "host:port" whose host is an IP literal; a name
// passes (it is checked when resolved and dialled).
func (p *Policy) CheckHostPort(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil // not an address pgrelay could dial either
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	ap, _ := netip.ParseAddrPort(net.JoinHostPort(ip.WithZone("").String(), port))
	return p.Check("", ip, ap.Port())
}

// Dialer returns a net.Dialer that refuses denied addresses after name
// resolution and before connecting.
func (p *Policy) Dialer() *net.Dialer {
	return &net.Dialer{ControlContext: func(_ context.Context, _, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("network policy: cannot read the address %q being dialled: %w", address, err)
		}
		return p.Check("", ap.Addr(), ap.Port())
	}}
}

// DialContext dials addr ("host:port") with [Policy.Dialer]. A refusal is
// a [*DeniedError] naming the host as given. It has the shape of a pgx
// DialFunc. A TCP connection comes back with direct reads and writes
// (internal/sockio): these are the data path's sockets, to a bastion or a
// database.
func (p *Policy) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := dial(ctx, p.Dialer(), network, addr)
	if err != nil {
		return nil, err
	}
	return sockio.Wrap(c), nil
}

// DialStd is [Policy.DialContext] with the timeout and keepalive of
// http.DefaultTransport's dialer and without the direct reads and writes:
// the connection is the net package's. It is the dial function of the
// HTTPS clients that fetch token credentials (package credential), which
// are not the data path.
func (p *Policy) DialStd(ctx context.Context, network, addr string) (net.Conn, error) {
	d := p.Dialer()
	d.Timeout, d.KeepAlive = stdDialTimeout, stdKeepAlive
	return dial(ctx, d, network, addr)
}

// dial dials addr with d; a refusal is a [*DeniedError] naming the host as
// given.
func dial(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		var denied *DeniedError
		if errors.As(err, &denied) {
			d := *denied
			if host, _, serr := net.SplitHostPort(addr); serr == nil && host != d.Addr.String() {
				d.Host = host
			}
			return nil, &d
		}
		return nil, err
	}
	return c, nil
}

// The dialer settings of http.DefaultTransport, which DialStd keeps.
const (
	stdDialTimeout = 30 * time.Second
	stdKeepAlive   = 30 * time.Second
)

// DeniedError means the network policy refused an address before anything
// was sent to it.
type DeniedError struct {
	// Host is the name the address was resolved from; empty when the
	// address was given as such.
	Host string
	// Addr is the refused address.
	Addr netip.Addr
	// Port is the port that was to be dialled; 0 when not known.
	Port uint16
	// Rule is the rule that denies it.
	Rule Rule
}

// Error names the address, the rule and the setting that changes it.
func (e *DeniedError) Error() string {
	target := e.Addr.String()
	if e.Port != 0 {
		target = netip.AddrPortFrom(e.Addr, e.Port).String()
	}
	if e.Host != "" {
		target = fmt.Sprintf("%s (%s)", e.Host, target)
	}
	lift := fmt.Sprintf("Allow it with --allow-network %s (env PGRELAY_ALLOW_NETWORK) on the pgrelay process that connects, "+
		"if this address is meant to be reached", e.Rule.Prefix)
	if !e.Rule.Default {
		lift = fmt.Sprintf("Remove --deny-network %s (env PGRELAY_DENY_NETWORK) or allow a narrower range with --allow-network, "+
			"if this address is meant to be reached", e.Rule.Prefix)
	}
	return fmt.Sprintf("connecting to %s is refused by pgrelay's network policy: %s is in %s, denied by %s; nothing was sent to it. %s",
		target, e.Addr, e.Rule.Prefix, e.Rule, lift)
}
