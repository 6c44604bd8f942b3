package app

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
)

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// BastionSetup returns a POSIX shell script, to run as root on the bastion,
// that creates the tunnel user and installs the connection's public key
// restricted to forwarding to the database; for a chain of hops, the
// script of the first hop (BastionSetupHop).
func (s *Service) BastionSetup(ctx context.Context, name string) (string, error) {
	return s.BastionSetupHop(ctx, name, 1)
}

// BastionSetupHop returns the setup script of hop (from 1) of the
// connection: the hop's user and its key, restricted to forwarding to the
// next hop (the last hop: to the database); with certificate logins, the
// CA that sshd must trust instead of a key.
func (s *Service) BastionSetupHop(ctx context.Context, name string, hop int) (string, error) {
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return "", err
	}
	if _, err := publicKeyLine(c, true); err != nil {
		return "", err
	}
	hops := c.Spec.Hops()
	if hop < 1 || hop > len(hops) {
		return "", &ValidationError{Subject: fielderr.Request, Problems: []fielderr.Problem{{Field: "hop",
			Problem: fmt.Sprintf("%d is out of range: connection %s has %d hop(s), numbered from 1", hop, name, len(hops))}}}
	}
	if c.Spec.Tunnel.Auth == connection.SSHAuthCertificate {
		return s.certificateSetup(ctx, c, hop)
	}
	lines, err := setupKeyLines(c, hop)
	if err != nil {
		return "", err
	}
	keys, err := installKeys(lines)
	if err != nil {
		return "", fmt.Errorf("connection %s: %w", name, err)
	}
	if hop > 1 || len(hops) > 1 {
		return hopSetup(c, hop, lines, keys), nil
	}
	t := c.Spec.Tunnel
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/sh
# Prepares bastion %[1]s for pgrelay connection %[2]q.
# Run it as root on the bastion, e.g.:
#   %[3]s
# It is safe to run more than once.
set -eu

TUNNEL_USER=%[4]s
# The key may only open forwards to the database (%[5]s:%[6]d): no shell, no PTY,
# no agent or X11 forwarding. Drop everything before "ssh-" for an unrestricted key.
PUBLIC_KEY=%[7]s
%[10]s
if [ "$(id -u)" -ne 0 ]; then
    echo "run this script as root (sudo sh $0)" >&2
    exit 1
fi

getent group "$TUNNEL_USER" >/dev/null || groupadd "$TUNNEL_USER"
id -u "$TUNNEL_USER" >/dev/null 2>&1 || useradd -m -g "$TUNNEL_USER" -s /bin/sh "$TUNNEL_USER"

# useradd leaves the account locked ("!" in /etc/shadow), and sshd running
# without PAM refuses locked accounts ("User ... not allowed because account
# is locked"). A "*" password unlocks the account for key logins while no
# password can ever match, so password login stays impossible.
case "$(getent shadow "$TUNNEL_USER" | cut -d: -f2)" in
    '!'|'!!'|'!*') usermod -p '*' "$TUNNEL_USER" ;;
esac

%[11]s
echo "bastion user $TUNNEL_USER is ready for pgrelay connection %[2]s"

# Recommended sshd settings (in /etc/ssh/sshd_config, then reload sshd):
#   AllowTcpForwarding yes        # pgrelay forwards to the database through the bastion
#   ClientAliveInterval 30        # sshd checks on pgrelay every 30 s ...
#   ClientAliveCountMax 10        # ... and gives up after 10 missed answers (300 s)
# pgrelay sends its own keepalive every %[8]s and gives up after %[9]d missed replies.
# Load balancers in front of the bastion must not cut idle connections in under %[8]s.
`, bastionAddr(t), c.Spec.Name, copyAndRun(c.Spec.Name, t.Host, t.Port), shellQuote(t.User), c.Spec.Host, c.Spec.Port, shellQuote(lines.line),
		t.KeepaliveInterval, t.KeepaliveCountMax, oldKeyVar(lines), keys)
	return b.String(), nil
}

// setupUser is the part of a setup script that creates and unlocks the
// tunnel user (TUNNEL_USER).
const setupUser = `if [ "$(id -u)" -ne 0 ]; then
    echo "run this script as root (sudo sh $0)" >&2
    exit 1
fi

getent group "$TUNNEL_USER" >/dev/null || groupadd "$TUNNEL_USER"
id -u "$TUNNEL_USER" >/dev/null 2>&1 || useradd -m -g "$TUNNEL_USER" -s /bin/sh "$TUNNEL_USER"

# useradd leaves the account locked, which sshd without PAM refuses; a "*"
# password unlocks it for key logins while no password can ever match.
case "$(getent shadow "$TUNNEL_USER" | cut -d: -f2)" in
    '!'|'!!'|'!*') usermod -p '*' "$TUNNEL_USER" ;;
esac
`

// hopSetup is the setup script of one hop of a chain: its key lines
// (setupKeyLines) and keys, the script that installs them (installKeys).
func hopSetup(c *store.Connection, hop int, lines setupKeys, keys string) string {
	hops := c.Spec.Hops()
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/sh
# Prepares hop %[1]d of %[2]d (%[3]s) for pgrelay connection %[4]q.
# Run it as root on that host; it is safe to run more than once.
set -eu

TUNNEL_USER=%[5]s
# The key may only open forwards to %[6]s (the next hop, or from the last
# hop the database): no shell, no PTY, no agent or X11 forwarding.
PUBLIC_KEY=%[7]s
%[8]s
`, hop, len(hops), hops[hop-1].Addr(), c.Spec.Name, shellQuote(hops[hop-1].User), forwardTarget(&c.Spec, hop-1), shellQuote(lines.line),
		oldKeyVar(lines))
	b.WriteString(setupUser)
	b.WriteString("\n" + keys)
	fmt.Fprintf(&b, "\necho \"hop %d user $TUNNEL_USER is ready for pgrelay connection %s\"\n", hop, c.Spec.Name)
	fmt.Fprintf(&b, "# Recommended in /etc/ssh/sshd_config: AllowTcpForwarding yes, ClientAliveInterval 30, ClientAliveCountMax 10.\n"+
		"# pgrelay sends its own keepalive on every hop every %s and gives up after %d missed replies.\n",
		c.Spec.Tunnel.KeepaliveInterval, c.Spec.Tunnel.KeepaliveCountMax)
	return b.String()
}

// certificateSetup is the setup script of a hop for certificate logins:
// the user, and sshd trusting pgrelay's CA (no authorized_keys entry).
func (s *Service) certificateSetup(ctx context.Context, c *store.Connection, hop int) (string, error) {
	ca, err := s.SSHCA(ctx)
	if err != nil {
		return "", err
	}
	hops := c.Spec.Hops()
	h := hops[hop-1]
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/sh
# Prepares hop %[1]d of %[2]d (%[3]s) for pgrelay connection %[4]q, which logs in
# with short-lived certificates signed by pgrelay's SSH CA (%[5]s):
# sshd trusts the CA, and the user needs no authorized_keys entry.
# Run it as root on that host; it is safe to run more than once.
set -eu

TUNNEL_USER=%[6]s
CA_KEY=%[7]s
# Another sshd_config may be named: SSHD_CONFIG=/path sh setup.sh
SSHD_CONFIG=${SSHD_CONFIG:-/etc/ssh/sshd_config}

`, hop, len(hops), h.Addr(), c.Spec.Name, ca.Fingerprint, shellQuote(h.User), shellQuote(ca.PublicKey))
	b.WriteString(setupUser)
	fmt.Fprintf(&b, `
# sshd reads one TrustedUserCAKeys file, the first one set (a second line is
# ignored, and one after a Match line holds for that match only): add the CA
# to the file sshd already uses, or name a file of its own at the top.
CA_FILE=$(sshd -T -f "$SSHD_CONFIG" | awk '$1 == "trustedusercakeys" && $2 != "none" { print $2 }')
if [ -z "$CA_FILE" ]; then
    CA_FILE=/etc/ssh/pgrelay_user_ca.pub
    { printf 'TrustedUserCAKeys %%s\n' "$CA_FILE"; cat "$SSHD_CONFIG"; } > "$SSHD_CONFIG.pgrelay-new"
    cat "$SSHD_CONFIG.pgrelay-new" > "$SSHD_CONFIG"
    rm -f "$SSHD_CONFIG.pgrelay-new"
fi
touch "$CA_FILE"
chmod 644 "$CA_FILE"
grep -qxF "$CA_KEY" "$CA_FILE" || printf '%%s\n' "$CA_KEY" >> "$CA_FILE"
if [ "$(sshd -T -f "$SSHD_CONFIG" | awk '$1 == "trustedusercakeys" { print $2 }')" != "$CA_FILE" ]; then
    echo "sshd does not read TrustedUserCAKeys $CA_FILE: set it in $SSHD_CONFIG, before any Match line" >&2
    exit 1
fi
sshd -t -f "$SSHD_CONFIG"
# Reload the sshd that reads $SSHD_CONFIG: the system's through its service
# manager, another (a bastion sshd of its own) by the PidFile it names, so
# that the host's own sshd is not reloaded in its place.
PID_FILE=$(sshd -T -f "$SSHD_CONFIG" | awk '$1 == "pidfile" { print $2 }')
if [ "$SSHD_CONFIG" = /etc/ssh/sshd_config ] && { systemctl reload ssh 2>/dev/null || systemctl reload sshd 2>/dev/null; }; then
    :
elif [ -n "$PID_FILE" ] && [ -s "$PID_FILE" ] && kill -HUP "$(cat "$PID_FILE")"; then
    :
else
    echo "sshd trusts the CA once it reads $SSHD_CONFIG again, but no running sshd of it was found (${PID_FILE:-no PidFile}): reload it (systemctl reload ssh, or kill -HUP its process)" >&2
    exit 1
fi

echo "hop %[1]d trusts pgrelay's SSH CA for user $TUNNEL_USER (connection %[2]s)"
# Certificates allow port forwarding only (no shell, PTY, agent or X11), for
# principal %[3]s, and name the connection and run in their key ID (sshd's log).
# A certificate cannot restrict where it forwards to; to allow only %[4]s, add:
#   Match User %[3]s
#       PermitOpen %[4]s
`, hop, c.Spec.Name, h.User, forwardTarget(&c.Spec, hop-1))
	return b.String(), nil
}

// copyAndRun is the command line that copies the setup script of
// connection name to the bastion host:port and runs it there as root: scp
// takes the port as -P and an IPv6 address in brackets, ssh as -p and as
// it is.
func copyAndRun(name, host string, port int) string {
	scpHost, scpPort, sshPort := host, "", ""
	if strings.Contains(host, ":") {
		scpHost = "[" + host + "]"
	}
	if port != connection.DefaultSSHPort {
		scpPort, sshPort = fmt.Sprintf("-P %d ", port), fmt.Sprintf("-p %d ", port)
	}
	return fmt.Sprintf("pgrelay connection bastion-setup %s > setup.sh && scp %ssetup.sh admin@%s: && ssh %sadmin@%s sudo sh setup.sh",
		name, scpPort, scpHost, sshPort, host)
}

// setupKeys are the authorized_keys lines the setup script of one hop
// installs.
type setupKeys struct {
	// line is the restricted line of the key pgrelay logs in with first.
	line string
	// old is, while a key rotation is pending, the current key's
	// restricted line without expiry-time, which the script adds in the
	// host's local time (oldKeyLine); "" otherwise.
	old string
	// oldExpires is when the old key's line expires.
	oldExpires time.Time
}

// setupKeyLines are the authorized_keys lines the setup script of hop
// (from 1) installs, the key pgrelay logs in with first: the hop's
// restricted line; while a key rotation is pending the new key's line and
// the current key's line, to which the script adds its expiry-time (the
// time `rotate-key --start` prints, in the host's local time; a hop given
// its own key during the rotation has its own line only).
func setupKeyLines(c *store.Connection, hop int) (setupKeys, error) {
	if c.RotationPending() {
		rot, err := rotationLines(c)
		if err != nil {
			return setupKeys{}, err
		}
		h := rot.Hops[hop-1]
		if h.Old == "" {
			return setupKeys{line: h.Line}, nil
		}
		old, err := keyLinesFor(c, c.SSHPublicKey)
		if err != nil {
			return setupKeys{}, err
		}
		return setupKeys{line: h.Line, old: old[hop-1].Line, oldExpires: c.KeyRotation.OldKeyExpiresAt}, nil
	}
	lines, err := hopKeyLines(c)
	if err != nil {
		return setupKeys{}, err
	}
	return setupKeys{line: lines[hop-1].Line}, nil
}

// oldKeyVar is the part of a setup script during a key rotation that
// names the current key's line and when it expires, "" otherwise.
func oldKeyVar(k setupKeys) string {
	if k.old == "" {
		return ""
	}
	return fmt.Sprintf(`# A key rotation is under way: PUBLIC_KEY is its new key. The current key keeps
# working until %[1]s (OLD_KEY_EXPIRES below); then sshd refuses it.
# The script writes that time on its line as expiry-time="YYYYMMDDHHMMSS" in this
# host's zone (TZ when set, else the system's): every OpenSSH since 7.7 reads that
# form in sshd's own zone, as standard time, while sshd before 8.5 refuses the UTC
# form "...Z" and with it the whole line. So run the script in sshd's zone: if sudo
# passes on a TZ of yours that sshd lacks, run it as  sudo env -u TZ sh setup.sh
OLD_KEY_LINE=%[2]s
OLD_KEY_EXPIRES=%[3]d
OLD_KEY_EXPIRES_UTC=%[4]s
`, k.oldExpires.UTC().Format(time.RFC3339), shellQuote(k.old), k.oldExpires.Unix(), k.oldExpires.UTC().Format(sshkey.LocalExpiryTimeFormat))
}

// oldKeyLine is the part of a setup script that sets OLD_KEY, the current
// key's line (OLD_KEY_LINE) with expiry-time OLD_KEY_EXPIRES as sshd reads
// a time without Z: in the host's zone, as standard time (OpenSSH parses
// it with mktime and tm_isdst 0, so in daylight saving time the clock time
// would be read an hour late). The standard offset is the one awk's mktime
// applies with its daylight saving flag 0 (gawk, mawk, busybox: the C
// library's mktime, as sshd's), checked first on a made-up zone; without
// such an awk, the lowest offset within half a year, which holds for every
// zone whose daylight saving time moves clocks forward but not for the
// "negative" daylight saving time of tzdata's Europe/Dublin and
// Africa/Casablanca, whose standard time is their summer time (there the
// old key would stop an hour early). The time comes from `date -d
// @SECONDS` (GNU, busybox) or `date -r SECONDS` (BSD), each trusted only
// when it shows the time in UTC as pgrelay does. When neither does,
// OLD_KEY is the line without expiry-time, which keeps the old key working
// until someone removes it, and the script says so.
func oldKeyLine(k setupKeys) string {
	const mark = "\x00"
	head, tail, _ := strings.Cut(sshkey.WithExpiryValue(k.old, mark), mark)
	return `
# date_at SECONDS FORMAT [-u] shows a time given in seconds since 1970 in FORMAT
# with the date option DATE_AT: -d @SECONDS (GNU, busybox) or -r SECONDS (BSD).
date_at() {
    if [ "$DATE_AT" = -d ]; then
        date ${3:+"$3"} -d "@$1" "+$2"
    else
        date ${3:+"$3"} -r "$1" "+$2"
    fi
}

# utc_offset SECONDS prints this host's offset from UTC at that time, in seconds.
utc_offset() {
    z=$(date_at "$1" %z) || return 1
    case $z in [+-][0-9][0-9][0-9][0-9]) ;; *) return 1 ;; esac
    h=${z#?}
    m=${h#??}
    h=${h%??}
    o=$(( (1$h - 100) * 3600 + (1$m - 100) * 60 ))
    case $z in -*) o=$(( -o )) ;; esac
    echo "$o"
}

# mktime_std YYYYMMDDHHMMSS prints the seconds since 1970 at which that clock
# time falls read as standard time in this host's zone, as sshd reads an
# expiry-time without Z (mktime with tm_isdst 0), with awk's mktime and its
# daylight saving flag 0 (gawk, mawk, busybox).
mktime_std() {
    awk -v c="$1" 'BEGIN {
        t = mktime(substr(c, 1, 4) " " substr(c, 5, 2) " " substr(c, 7, 2) " " substr(c, 9, 2) " " substr(c, 11, 2) " " substr(c, 13, 2) " 0")
        if (t < 0) exit 1
        printf "%.0f\n", t
    }' | grep -x '[0-9][0-9]*'
}

# clock_at SECONDS prints that time in UTC as YYYYMMDDHHMMSS.
clock_at() {
    c=$(date_at "$1" %Y%m%d%H%M%S -u 2>/dev/null) || return 1
    case $c in *[!0-9]*) return 1 ;; esac
    [ "${#c}" -eq 14 ] || return 1
    printf '%s\n' "$c"
}

# expiry_time prints OLD_KEY_EXPIRES as sshd reads an expiry-time without Z:
# YYYYMMDDHHMMSS in this host's zone, in its standard time, for sshd reads it
# as such in every season (a clock time in daylight saving time would be read
# an hour late). The standard offset is the one awk's mktime applies with its
# daylight saving flag 0, when awk has such a mktime (checked on a made-up
# zone, in daylight saving time on 1 July 2020); else the lowest one within
# half a year either side, which is wrong where tzdata's standard time is the
# summer's (Europe/Dublin, Africa/Casablanca). A date option is used only if
# it shows OLD_KEY_EXPIRES in UTC as pgrelay does.
expiry_time() {
    awk_std=
    if [ "$(TZ=XST0XDT,M3.2.0,M11.1.0; export TZ; mktime_std 20200701120000 2>/dev/null)" = 1593604800 ]; then
        awk_std=1
    fi
    for DATE_AT in -d -r; do
        [ "$(clock_at "$OLD_KEY_EXPIRES")" = "$OLD_KEY_EXPIRES_UTC" ] || continue
        std=
        for k in -6 -5 -4 -3 -2 -1 0 1 2 3 4 5 6; do
            o=$(utc_offset $((OLD_KEY_EXPIRES + k * 2629800)) 2>/dev/null) || continue 2
            if [ -z "$std" ] || [ "$o" -lt "$std" ]; then
                std=$o
            fi
        done
        t=$(clock_at $((OLD_KEY_EXPIRES + std))) || continue
        if [ -n "$awk_std" ] && m=$(mktime_std "$t" 2>/dev/null); then
            # mktime read t as OLD_KEY_EXPIRES + std - (its offset).
            o=$((OLD_KEY_EXPIRES + std - m))
            if [ "$o" -ne "$std" ] && a=$(clock_at $((OLD_KEY_EXPIRES + o))) &&
                [ "$(mktime_std "$a" 2>/dev/null)" = "$OLD_KEY_EXPIRES" ]; then
                t=$a
            fi
        fi
        printf '%s\n' "$t"
        return 0
    done
    return 1
}
if OLD_KEY_EXPIRY=$(expiry_time); then
    OLD_KEY=` + shellQuote(head) + `"$OLD_KEY_EXPIRY"` + shellQuote(tail) + `
else
    OLD_KEY=$OLD_KEY_LINE
    cat >&2 <<EOF
pgrelay: NOT giving the current key's line its expiry-time: this host's date command
shows a time given in seconds since 1970 neither with -d @SECONDS (GNU, busybox) nor
with -r SECONDS (BSD), and sshd before 8.5 refuses the UTC form "...Z" with the whole
line. The current key's line is installed without expiry-time, so the old key keeps
working until you remove it: once the new key is promoted (pgrelay connection show
says so), remove this line from $AUTH_KEYS:
$OLD_KEY_LINE
(or give it expiry-time="YYYYMMDDHHMMSS" yourself: $OLD_KEY_EXPIRES_UTC UTC in this
host's standard time; sshd 8.5 or later also reads expiry-time="${OLD_KEY_EXPIRES_UTC}Z").
EOF
fi
`
}

// installKeys is the part of a setup script that puts k's lines
// (PUBLIC_KEY, and during a rotation OLD_KEY, see oldKeyLine) in the
// tunnel user's authorized_keys.
// Each line takes the place of every line of the same key: sshd goes by the
// first line of a key, so an older one (unrestricted, forwarding elsewhere,
// or without a rotation's expiry-time) must not stay ahead of it.
// Permissions are only ever narrowed.
func installKeys(k setupKeys) (string, error) {
	var b strings.Builder
	b.WriteString(`HOME_DIR=$(getent passwd "$TUNNEL_USER" | cut -d: -f6)
AUTH_KEYS="$HOME_DIR/.ssh/authorized_keys"
mkdir -p "$HOME_DIR/.ssh"
chmod go-rwx "$HOME_DIR/.ssh"
touch "$AUTH_KEYS"
chmod go-rwx "$AUTH_KEYS"

# install_key LINE KEY puts LINE in authorized_keys in place of every line of
# KEY (its base64 part): sshd goes by the first line of a key, so a line of it
# installed before (unrestricted, or forwarding elsewhere) must not stay.
install_key() {
    if [ "$(grep -cF -- "$2" "$AUTH_KEYS")" = 1 ] && grep -qxF -- "$1" "$AUTH_KEYS"; then
        return 0
    fi
    (umask 077 && awk -v key="$2" '{ for (i = 1; i <= NF; i++) if ($i == key) next; print }' "$AUTH_KEYS" > "$AUTH_KEYS.pgrelay-new")
    printf '%s\n' "$1" >> "$AUTH_KEYS.pgrelay-new"
    cat "$AUTH_KEYS.pgrelay-new" > "$AUTH_KEYS"
    rm -f "$AUTH_KEYS.pgrelay-new"
}
`)
	if k.old != "" {
		b.WriteString(oldKeyLine(k))
	}
	for _, l := range []struct{ v, line string }{{"$PUBLIC_KEY", k.line}, {"$OLD_KEY", k.old}} {
		if l.line == "" {
			continue
		}
		pub, err := sshkey.ParsePublic(l.line)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "install_key \"%s\" %s\n", l.v, shellQuote(base64.StdEncoding.EncodeToString(pub.Marshal())))
	}
	b.WriteString(`chown -R "$TUNNEL_USER:$TUNNEL_USER" "$HOME_DIR/.ssh"
`)
	return b.String(), nil
}
