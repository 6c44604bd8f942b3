package sshkey

import (
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// ExpiryTimeFormat is the layout of authorized_keys' expiry-time option in
// UTC: recent OpenSSH (9.2 tested) reads the trailing Z as UTC; older
// releases (8.4) refuse the whole line, which the README says.
const ExpiryTimeFormat = "20060102150405Z"

// PermitOpen formats host:port for a permitopen option: IPv6 literals in
// brackets, as sshd reads them.
func PermitOpen(host string, port int) string {
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

// RestrictedTo formats pub as an authorized_keys line that allows nothing
// but forwarding to target (a PermitOpen value); the line of one hop of a
// chain, which may forward only to the next hop (the last one: to the
// database).
func RestrictedTo(pub ssh.PublicKey, comment, target string) string {
	return `restrict,port-forwarding,permitopen="` + target + `" ` + AuthorizedKey(pub, comment)
}

// WithExpiry prefixes an authorized_keys line (restricted or not) with
// the option expiry-time="…" (UTC, see ExpiryTimeFormat): sshd refuses the
// key after that time, so an old key retires by itself.
func WithExpiry(line string, at time.Time) string {
	opt := `expiry-time="` + at.UTC().Format(ExpiryTimeFormat) + `"`
	if strings.HasPrefix(line, "restrict") {
		return opt + "," + line
	}
	return opt + " " + line
}
