package sshkey

import (
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// ExpiryTimeFormat is the layout of authorized_keys' expiry-time option in
// UTC: OpenSSH 8.5 and later (9.2 tested) read the trailing Z as UTC;
// older releases (8.4) refuse the whole line.
const ExpiryTimeFormat = "20060102150405Z"

// LocalExpiryTimeFormat is the layout of authorized_keys' expiry-time
// option without a zone, which every OpenSSH since 7.7 reads in sshd's
// local time zone as standard time (tm_isdst 0, in every season): the
// form for sshd before 8.5, written on the host itself (the bastion setup
// script does), since only it knows its zone.
const LocalExpiryTimeFormat = "20060102150405"

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
// the option expiry-time="…" (UTC, see ExpiryTimeFormat: sshd 8.5 and
// later): sshd refuses the key after that time, so an old key retires by
// itself.
func WithExpiry(line string, at time.Time) string {
	return WithExpiryValue(line, at.UTC().Format(ExpiryTimeFormat))
}

// WithExpiryValue prefixes an authorized_keys line (restricted or not)
// with the option expiry-time="value", value as sshd is to read it (see
// ExpiryTimeFormat and LocalExpiryTimeFormat).
func WithExpiryValue(line, value string) string {
	opt := `expiry-time="` + value + `"`
	if strings.HasPrefix(line, "restrict") {
		return opt + "," + line
	}
	return opt + " " + line
}
