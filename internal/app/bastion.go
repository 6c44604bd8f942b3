package app

import (
	"context"
	"fmt"
	"strings"
)

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// BastionSetup returns a POSIX shell script, to run as root on the bastion,
// that creates the tunnel user and installs the connection's public key
// restricted to forwarding to the database.
func (s *Service) BastionSetup(ctx context.Context, name string) (string, error) {
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return "", err
	}
	line, err := publicKeyLine(c, true)
	if err != nil {
		return "", err
	}
	t := c.Spec.Tunnel
	var b strings.Builder
	fmt.Fprintf(&b, `#!/bin/sh
# Prepares bastion %[1]s for pgrelay connection %[2]q.
# Run it as root on the bastion, e.g.:
#   pgrelay connection bastion-setup %[2]s > setup.sh && scp setup.sh admin@%[3]s: && ssh admin@%[3]s sudo sh setup.sh
# It is safe to run more than once.
set -eu

TUNNEL_USER=%[4]s
# The key may only open forwards to the database (%[5]s:%[6]d): no shell, no PTY,
# no agent or X11 forwarding. Drop everything before "ssh-" for an unrestricted key.
PUBLIC_KEY=%[7]s

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

HOME_DIR=$(getent passwd "$TUNNEL_USER" | cut -d: -f6)
mkdir -p "$HOME_DIR/.ssh"
chmod 700 "$HOME_DIR/.ssh"
touch "$HOME_DIR/.ssh/authorized_keys"
chmod 600 "$HOME_DIR/.ssh/authorized_keys"
grep -qxF "$PUBLIC_KEY" "$HOME_DIR/.ssh/authorized_keys" || printf '%%s\n' "$PUBLIC_KEY" >> "$HOME_DIR/.ssh/authorized_keys"
chown -R "$TUNNEL_USER:$TUNNEL_USER" "$HOME_DIR/.ssh"

echo "bastion user $TUNNEL_USER is ready for pgrelay connection %[2]s"

# Recommended sshd settings (in /etc/ssh/sshd_config, then reload sshd):
#   AllowTcpForwarding yes        # pgrelay forwards to the database through the bastion
#   ClientAliveInterval 30        # sshd checks on pgrelay every 30 s ...
#   ClientAliveCountMax 10        # ... and gives up after 10 missed answers (300 s)
# pgrelay sends its own keepalive every %[8]s and gives up after %[9]d missed replies.
# Load balancers in front of the bastion must not cut idle connections in under %[8]s.
`, bastionAddr(t), c.Spec.Name, t.Host, shellQuote(t.User), c.Spec.Host, c.Spec.Port, shellQuote(line),
		t.KeepaliveInterval, t.KeepaliveCountMax)
	return b.String(), nil
}
