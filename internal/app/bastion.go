package app

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"

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
`, bastionAddr(t), c.Spec.Name, copyAndRun(c.Spec.Name, t.Host, t.Port), shellQuote(t.User), c.Spec.Host, c.Spec.Port, shellQuote(lines[0]),
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
func hopSetup(c *store.Connection, hop int, lines []string, keys string) string {
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
`, hop, len(hops), hops[hop-1].Addr(), c.Spec.Name, shellQuote(hops[hop-1].User), forwardTarget(&c.Spec, hop-1), shellQuote(lines[0]),
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
(systemctl reload ssh 2>/dev/null || systemctl reload sshd 2>/dev/null || kill -HUP "$(cat /run/sshd.pid)")

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

// setupKeyLines are the authorized_keys lines the setup script of hop
// (from 1) installs, the key pgrelay logs in with first: the hop's
// restricted line; while a key rotation is pending the new key's line and
// the current key's line with its expiry-time (as `rotate-key --start`
// prints them; a hop given its own key during the rotation has its own
// line only).
func setupKeyLines(c *store.Connection, hop int) ([]string, error) {
	if c.RotationPending() {
		rot, err := rotationLines(c)
		if err != nil {
			return nil, err
		}
		if h := rot.Hops[hop-1]; h.Old != "" {
			return []string{h.Line, h.Old}, nil
		}
		return []string{rot.Hops[hop-1].Line}, nil
	}
	lines, err := hopKeyLines(c)
	if err != nil {
		return nil, err
	}
	return []string{lines[hop-1].Line}, nil
}

// oldKeyVar is the OLD_KEY assignment of a setup script during a key
// rotation (lines from setupKeyLines), "" otherwise.
func oldKeyVar(lines []string) string {
	if len(lines) < 2 {
		return ""
	}
	return `# A key rotation is under way: PUBLIC_KEY is its new key. The current key keeps
# working until the expiry-time on its line, after which sshd refuses it.
OLD_KEY=` + shellQuote(lines[1]) + "\n"
}

// installKeys is the part of a setup script that puts lines (PUBLIC_KEY,
// and OLD_KEY when there are two) in the tunnel user's authorized_keys.
// Each line takes the place of every line of the same key: sshd goes by the
// first line of a key, so an older one (unrestricted, forwarding elsewhere,
// or without a rotation's expiry-time) must not stay ahead of it.
// Permissions are only ever narrowed.
func installKeys(lines []string) (string, error) {
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
	for i, l := range lines {
		pub, err := sshkey.ParsePublic(l)
		if err != nil {
			return "", err
		}
		v := "$PUBLIC_KEY"
		if i > 0 {
			v = "$OLD_KEY"
		}
		fmt.Fprintf(&b, "install_key \"%s\" %s\n", v, shellQuote(base64.StdEncoding.EncodeToString(pub.Marshal())))
	}
	b.WriteString(`chown -R "$TUNNEL_USER:$TUNNEL_USER" "$HOME_DIR/.ssh"
`)
	return b.String(), nil
}
