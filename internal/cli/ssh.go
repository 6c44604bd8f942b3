package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// sshBackend are the use cases of chains of hops, key rotation with two
// live keys and pgrelay's SSH CA, local (*app.Service) or remote (client).
type sshBackend interface {
	BastionSetupHop(ctx context.Context, name string, hop int) (string, error)
	HopKeys(ctx context.Context, name string) ([]app.HopKeyLines, error)
	RotateKey(ctx context.Context, name string) (*app.KeyRotation, error)
	RotateKeyStart(ctx context.Context, name string, oldLifetime time.Duration) (*app.KeyRotation, error)
	RotateKeyStatus(ctx context.Context, name string) (*app.KeyRotation, error)
	RotateKeyFinish(ctx context.Context, name string) (*app.KeyRotation, error)
	RotateKeyCancel(ctx context.Context, name string) (*app.ConnectionView, error)
	SSHCA(ctx context.Context) (*app.SSHCAView, error)
	InitSSHCA(ctx context.Context, principals ...string) (*app.SSHCAView, error)
	SetSSHCAPrincipals(ctx context.Context, p app.SSHCAPrincipals) (*app.SSHCAView, error)
}

// hopChain renders every hop: "u@a:22 → u@b:22".
func hopChain(v *app.ConnectionView) string {
	parts := make([]string, len(v.SSHHops))
	for i, h := range v.SSHHops {
		parts[i] = h.User + "@" + hostPort(h.Host, h.Port)
	}
	return strings.Join(parts, " → ")
}

// hopsHostKeyState sums up the host keys of every hop for `connection list`.
func hopsHostKeyState(v *app.ConnectionView) string {
	if len(v.SSHHops) <= 1 {
		return hostKeyState(v.SSHTunnel)
	}
	pinned := 0
	for i, h := range v.SSHHops {
		if h.PendingHostKeyFingerprint != "" {
			return fmt.Sprintf("hop %d CHANGED (approval needed)", i+1)
		}
		if h.HostKeyFingerprint != "" {
			pinned++
		}
	}
	if pinned == len(v.SSHHops) {
		return "pinned"
	}
	return fmt.Sprintf("%d of %d pinned", pinned, len(v.SSHHops))
}

// printSSHHops prints every hop of a chain with its host key.
func printSSHHops(row func(k, v string), v *app.ConnectionView) {
	if len(v.SSHHops) <= 1 {
		return
	}
	for i, h := range v.SSHHops {
		state := "host key not pinned yet"
		switch {
		case h.PendingHostKeyFingerprint != "":
			state = fmt.Sprintf("host key CHANGED: presented %s; approve it with: pgrelay connection trust-host-key %s --fingerprint %s",
				h.PendingHostKeyFingerprint, v.Name, h.PendingHostKeyFingerprint)
		case len(h.HostKeyFingerprints) > 1:
			state = "host keys " + strings.Join(h.HostKeyFingerprints, ", ") + " (pinned; any of them is accepted)"
		case h.HostKeyFingerprint != "":
			state = "host key " + h.HostKeyFingerprint + " (pinned)"
		}
		if h.OwnKey {
			state += ", own key " + h.OwnKeyFingerprint
		}
		row(fmt.Sprintf("  Hop %d of %d:", i+1, len(v.SSHHops)), fmt.Sprintf("%s@%s, %s", h.User, hostPort(h.Host, h.Port), state))
	}
}

// printSSHExtras prints the login method, proxy command, host authorities
// and a key rotation under way.
func printSSHExtras(row func(k, v string), v *app.ConnectionView) {
	t := v.SSHTunnel
	if t.Auth == connection.SSHAuthCertificate {
		row("  Login:", "certificates signed per tunnel by pgrelay's SSH CA (pgrelay ssh-ca show); no authorized_keys entry needed")
	}
	if len(t.ProxyCommand) > 0 {
		row("  Proxy command:", jobs.ShellJoin(t.ProxyCommand))
	}
	for i, l := range t.HostAuthorities {
		label := ""
		if i == 0 {
			label = "  Host authorities:"
		}
		row(label, l)
	}
	if r := t.Rotation; r != nil {
		switch {
		case r.Pending:
			row("  Key rotation:", fmt.Sprintf("%s: new key %s, started %s; every login tries it first and falls back to the old key, "+
				"whose line expires %s. Its lines: pgrelay connection rotate-key %s --status",
				app.NewKeyNotInstalled, r.NewPublicKeyFingerprint, fmtTime(r.StartedAt), fmtTime(r.OldKeyExpiresAt), v.Name))
		case r.PromotedAt != nil:
			row("  Key rotation:", fmt.Sprintf("new key promoted %s (by %s); the old key is no longer used: remove its line (it expires %s)",
				fmtTime(r.PromotedAt), r.PromotedBy, fmtTime(r.OldKeyExpiresAt)))
		}
	}
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

// printSavedHops prints how to install a chain's keys, or a certificate
// connection's CA, after it was saved; false for one bastion with a key.
func printSavedHops(w io.Writer, v *app.ConnectionView) bool {
	t := v.SSHTunnel
	switch {
	case t.Auth == connection.SSHAuthCertificate:
		fmt.Fprintf(w, `
This connection logs in with a short-lived certificate per tunnel, signed by
pgrelay's SSH CA: no authorized_keys entry is needed. Each hop's sshd must trust
the CA (TrustedUserCAKeys): see pgrelay ssh-ca show, or run on each hop as root
the script of: pgrelay connection bastion-setup %[1]s --hop N
Then test the connection, hop by hop: pgrelay connection test %[1]s
`, v.Name)
		return true
	case len(v.SSHHops) > 1:
		fmt.Fprintf(w, `
A key pair was generated for this connection; it logs in to each of the %[2]d hops
(%[3]s). Install one line on each hop, as a line of the hop user's
~/.ssh/authorized_keys; each allows only forwarding to the next hop, the last
one to the database:
  pgrelay connection public-key %[1]s --restricted   (one line per hop, in order)
or run on each hop, as root, the script of:
  pgrelay connection bastion-setup %[1]s --hop N
Then test the connection, hop by hop: pgrelay connection test %[1]s
Each hop's host key is pinned on the first connection.
`, v.Name, len(v.SSHHops), hopChain(v))
		for i, h := range v.SSHHops {
			if h.OwnKey {
				fmt.Fprintf(w, "Hop %d (%s@%s) logs in with a key pair of its own (%s): its line is that key's.\n",
					i+1, h.User, hostPort(h.Host, h.Port), h.OwnKeyFingerprint)
			}
		}
		return true
	}
	return false
}

func (r *runner) connRotateKeyCommand() *cobra.Command {
	var output string
	var start, finish, cancel, status bool
	var oldLifetime time.Duration
	cmd := &cobra.Command{
		Use:   "rotate-key NAME [--start [--old-key-lifetime D] | --status | --finish | --cancel]",
		Short: "Replace the connection's SSH key pair (with --start: two live keys, no outage)",
		Long: `Replace the connection's SSH key pair.

With --start, a new key pair is made and the old one kept: every login tries the new
key first and falls back to the old one, so nothing fails while you install the new
key on the hops. The first login that every hop accepts with the new key promotes it
(recorded with the time; connection show says "new key not installed yet" until then).
The old key's line is printed with expiry-time="...Z" (UTC, which OpenSSH 8.5 and later
read): install it in place of the current line, so that sshd refuses the old key after
that time even if nobody removes it. OpenSSH before 8.5 (Debian 11, Ubuntu 20.04, RHEL 8)
refuses such a line as a whole, so the old key would stop at once: there (from 7.7), write
the time without the Z in the host's local time, which sshd reads as standard time (the
command to print it is shown with the lines), or run the script of bastion-setup, which
writes it exactly. --status prints the lines again (with no rotation under way: how the
last one ended, and the current key), --finish promotes the new key now
(after checking that every hop accepts it), --cancel drops it.

Without a flag, the key is replaced at once: logins fail until the new key is installed.

A hop with its own key (--ssh-hop-own-key) has it rotated with the connection's: with
--start it gets a new key too (its lines are printed for that hop) and is promoted with
the others; without a flag it is replaced at once and its new line printed.`,
		Example: `  pgrelay connection rotate-key wh --start
  pgrelay connection rotate-key wh --status
  pgrelay connection rotate-key wh --finish`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			n := 0
			for _, b := range []bool{start, finish, cancel, status} {
				if b {
					n++
				}
			}
			if n > 1 {
				return usagef("give only one of --start, --status, --finish and --cancel")
			}
			if cmd.Flags().Changed("old-key-lifetime") && !start {
				return usagef("--old-key-lifetime goes with --start")
			}
			// Checked here, so that the flag is named locally and against a
			// server alike (and an explicit 0 is not read as the default).
			if cmd.Flags().Changed("old-key-lifetime") && (oldLifetime < time.Hour || oldLifetime > app.MaxOldKeyLifetime) {
				return usagef("--old-key-lifetime %s: accepted is 1h to %.0fh (366 days), e.g. 48h; leave it out for %.0fh",
					oldLifetime, app.MaxOldKeyLifetime.Hours(), app.DefaultOldKeyLifetime.Hours())
			}
			svc, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			name := args[0]
			ctx := cmd.Context()
			var rot *app.KeyRotation
			switch {
			case start:
				rot, err = svc.RotateKeyStart(ctx, name, oldLifetime)
			case status:
				// No rotation under way: its state, not an error.
				if v, err := svc.GetConnection(ctx, name); err == nil && v.SSHTunnel != nil && v.SSHTunnel.PublicKey != "" &&
					(v.SSHTunnel.Rotation == nil || !v.SSHTunnel.Rotation.Pending) {
					if output == "json" {
						// As --finish answers: New is the key in use.
						return writeJSON(r.out(), &app.KeyRotation{New: v.SSHTunnel.PublicKey, Connection: v})
					}
					printNoRotation(r.out(), v)
					return nil
				}
				rot, err = svc.RotateKeyStatus(ctx, name)
			case finish:
				rot, err = svc.RotateKeyFinish(ctx, name)
			case cancel:
				var v *app.ConnectionView
				if v, err = svc.RotateKeyCancel(ctx, name); err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(r.out(), v)
				}
				lines, err := svc.HopKeys(ctx, name)
				if err != nil {
					return err
				}
				printCancelled(r.out(), v, lines)
				return nil
			default:
				rot, err = svc.RotateKey(ctx, name)
			}
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(r.out(), rot)
			}
			cert := false
			if v, err := svc.GetConnection(ctx, name); err == nil && v.SSHTunnel != nil {
				cert = v.SSHTunnel.Auth == connection.SSHAuthCertificate
			}
			printRotation(r.out(), name, rot, start || status, finish, cert)
			return nil
		},
	}
	cmd.Flags().BoolVar(&start, "start", false, "make a new key pair and keep the old one until the new one has logged in to every hop")
	cmd.Flags().BoolVar(&status, "status", false, "print the lines of the rotation under way; without one, how the last one ended and the current key")
	cmd.Flags().BoolVar(&finish, "finish", false, "promote the new key now, after checking that every hop accepts it")
	cmd.Flags().BoolVar(&cancel, "cancel", false, "drop the new key; the current one stays")
	cmd.Flags().DurationVar(&oldLifetime, "old-key-lifetime", 0, "with --start: how long the old key's line stays valid (expiry-time; default 168h)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// printNoRotation is `rotate-key --status` without a rotation under way:
// how the last one ended (if any), and the key in use.
func printNoRotation(w io.Writer, v *app.ConnectionView) {
	t := v.SSHTunnel
	r := t.Rotation
	switch {
	case r == nil:
		fmt.Fprintf(w, "No key rotation of %q yet.\n", v.Name)
	case r.PromotedAt != nil && (r.CancelledAt == nil || r.PromotedAt.After(*r.CancelledAt)):
		fmt.Fprintf(w, "No key rotation of %q under way: the last one finished %s (its new key promoted by %s, started %s).\n"+
			"The old key is no longer used: remove its line from the hops where it is still installed (it expires %s).\n",
			v.Name, fmtTime(r.PromotedAt), promotedBy(r.PromotedBy), fmtTime(r.StartedAt), fmtTime(r.OldKeyExpiresAt))
	case r.CancelledAt != nil:
		fmt.Fprintf(w, "No key rotation of %q under way: the last one was cancelled %s (started %s); the current key stayed.\n",
			v.Name, fmtTime(r.CancelledAt), fmtTime(r.StartedAt))
	default:
		fmt.Fprintf(w, "No key rotation of %q under way.\n", v.Name)
	}
	fmt.Fprintf(w, "The current key (%s):\n\n%s\n\n", t.PublicKeyFingerprint, t.PublicKey)
	if t.Auth == connection.SSHAuthCertificate {
		fmt.Fprintln(w, "It logs in with certificates of pgrelay's SSH CA: nothing of it is installed on the hops.")
	} else {
		fmt.Fprintf(w, "Its lines, allowed only to forward: pgrelay connection public-key %s --restricted\n", v.Name)
	}
	fmt.Fprintf(w, "To rotate it with two live keys: pgrelay connection rotate-key %s --start\n", v.Name)
}

// promotedBy says how a rotation's new key was promoted.
func promotedBy(by string) string {
	switch by {
	case "login":
		return "its first login to every hop"
	case "finish":
		return "rotate-key --finish"
	}
	return by
}

// printCancelled says what a cancelled rotation leaves to do on the hops:
// remove the new key's lines, and put back the current key's line where it
// was given its expiry-time, or sshd refuses the only key after that time.
func printCancelled(w io.Writer, v *app.ConnectionView, lines []app.HopKeyLines) {
	expires := "-"
	if r := v.SSHTunnel.Rotation; r != nil {
		expires = fmtTime(r.OldKeyExpiresAt)
	}
	fmt.Fprintf(w, "Key rotation of %q cancelled: the current key stays; remove the new key's lines from the hops.\n"+
		"Where the current key's line was replaced by the one with expiry-time=\"...\", put this line back in its place,\n"+
		"or sshd refuses the current key, the only one, after %s (the script of `pgrelay connection bastion-setup %s` does it):\n",
		v.Name, expires, v.Name)
	for _, l := range lines {
		if len(lines) > 1 {
			fmt.Fprintf(w, "\nHop %d (%s@%s):\n", l.Hop, l.User, hostPort(l.Host, l.Port))
		}
		fmt.Fprintf(w, "\n%s\n", l.Line)
	}
}

// printRotation prints the lines of a key rotation.
// cert says the connection logs in with certificates.
func printRotation(w io.Writer, name string, rot *app.KeyRotation, pending, finished, cert bool) {
	switch {
	case pending:
		fmt.Fprintf(w, "Key rotation of %q under way (%s). pgrelay tries the new key first and falls back to the old one,\n"+
			"so nothing fails meanwhile; the first login that every hop accepts with the new key promotes it.\n\n", name, app.NewKeyNotInstalled)
		if len(rot.Hops) > 0 {
			for _, h := range rot.Hops {
				if h.Old == "" {
					fmt.Fprintf(w, "Hop %d (%s@%s) logs in with its own key (%s), given during the rotation: nothing to change there.\n\n",
						h.Hop, h.User, hostPort(h.Host, h.Port), h.Fingerprint)
					continue
				}
				own := ""
				if h.OwnKey {
					own = " (its own key)"
				}
				fmt.Fprintf(w, "Hop %d (%s@%s)%s: add the new line\n\n%s\n\nand replace the current line with this one, which expires %s:\n\n%s\n\n",
					h.Hop, h.User, hostPort(h.Host, h.Port), own, h.Line, fmtTime(rot.OldKeyExpiresAt), h.Old)
			}
		}
		fmt.Fprintf(w, "Unrestricted, the new line is:\n%s\nand the old one with its expiry:\n%s\n", rot.New, rot.Old)
		if rot.OldKeyExpiresAt != nil {
			printLocalExpiry(w, name, *rot.OldKeyExpiresAt)
		}
	case finished:
		fmt.Fprintf(w, "The new key of %q is promoted: every hop accepted it, and the old key is no longer used.\n"+
			"Remove the old line from the hops (it expires %s anyway):\n\n%s\n", name, fmtTime(rot.OldKeyExpiresAt), rot.Old)
	case cert:
		// The hops trust the CA, not the key: nothing to install.
		fmt.Fprintf(w, "New key pair generated for %q. It logs in with certificates of pgrelay's SSH CA, which the hops trust:\n"+
			"nothing to install on them; the next login uses the new key with a certificate of its own.\n", name)
	default:
		fmt.Fprintf(w, "New key pair generated for %q. Add the new public key to the bastion's authorized_keys:\n\n%s\n\nthen remove the old one:\n\n%s\n", name, rot.New, rot.Old)
		fmt.Fprintf(w, "\nSafer, the new key allowed only to forward (one line per hop): pgrelay connection public-key %s --restricted\n", name)
		for _, h := range rot.Hops {
			if h.OwnKey {
				fmt.Fprintf(w, "\nHop %d (%s@%s) logs in with its own key, replaced too: put this line in place of its old one:\n\n%s\n",
					h.Hop, h.User, hostPort(h.Host, h.Port), h.Line)
			}
		}
	}
}

// printLocalExpiry says how to write the old line's expiry-time for
// OpenSSH before 8.5, which refuses the UTC form ("…Z") printed and with
// it the whole line: in the host's local time, without the Z.
func printLocalExpiry(w io.Writer, name string, at time.Time) {
	fmt.Fprintf(w, "\nThe expiry-time above is UTC (the trailing Z), which OpenSSH 8.5 and later read. OpenSSH before 8.5\n"+
		"(`ssh -V` on the host; Debian 11, Ubuntu 20.04, RHEL 8) refuses that whole line, and the old key would stop at once:\n"+
		"there, write the time without the Z, in the host's local time, as this prints it on the host:\n\n"+
		"  date -d @%[1]d +%%Y%%m%%d%%H%%M%%S      (BSD: date -r %[1]d +%%Y%%m%%d%%H%%M%%S)\n\n"+
		"(sshd reads it as standard time: when that time falls in daylight saving time, the old key gets in an hour longer;\n"+
		"in Europe/Dublin and Africa/Casablanca, whose standard time in tzdata is the summer's, an hour less in winter),\n"+
		"or run the script of `pgrelay connection bastion-setup %[2]s` (--hop N for hop N) there, which writes it exactly.\n", at.Unix(), name)
}

func (r *runner) sshCACommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ssh-ca",
		Short: "pgrelay's SSH user CA, for certificate logins to bastions (--ssh-auth certificate)",
		Long: `pgrelay's SSH user certificate authority. Connections with --ssh-auth certificate log in
to each hop with a certificate of their key, signed for each tunnel: principal = the
hop's user, valid from a minute ago until the run's timeout plus 5 minutes (1 hour plus
5 minutes for queries, proxies and exec), port forwarding only, and a key ID naming
pgrelay, the connection and the run (sshd logs it). The bastions trust the CA with
TrustedUserCAKeys, so no authorized_keys entry is needed. The CA's private key is sealed
in the store like every secret.

sshd's TrustedUserCAKeys (without AuthorizedPrincipalsFile) accepts a certificate for any
local user it names as principal. So that a connection cannot log in as any user of the
bastions (root included) by naming it, give the CA the list of the bastion users it may
sign for: pgrelay ssh-ca init --principal USER (repeatable), or later
pgrelay ssh-ca principals USER... (admins). A certificate connection whose hop user is not
in the list is refused when it is saved, and no certificate is signed for it. Without a
list (a CA made before lists existed, or init without --principal) the CA signs for any
user a connection names.`,
	}
	var output string
	var principals []string
	show := func(init bool) *cobra.Command {
		use, short := "show", "Print the CA's public key (the line for the bastions' TrustedUserCAKeys; its principals on stderr)"
		example := "  pgrelay ssh-ca show > pgrelay_user_ca.pub"
		if init {
			use, short = "init", "Create the CA (once; an admin), with the bastion users it may sign for (--principal)"
			example = "  pgrelay ssh-ca init --principal dbtcloud --principal etl"
		}
		c := &cobra.Command{
			Use:     use,
			Short:   short,
			Example: example,
			Args:    exactArgs(0, ""),
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := checkOutput(output, "text", "json"); err != nil {
					return err
				}
				svc, err := r.backend(cmd.Context())
				if err != nil {
					return err
				}
				var ca *app.SSHCAView
				if init {
					ca, err = svc.InitSSHCA(cmd.Context(), principals...)
					err = principalsInCLIWords(err, func(int) string { return "--principal" })
				} else {
					ca, err = svc.SSHCA(cmd.Context())
				}
				if err != nil {
					return err
				}
				if output == "json" {
					return writeJSON(r.out(), ca)
				}
				if init {
					fmt.Fprintf(r.out(), "SSH CA created (%s). Add this line to each bastion's TrustedUserCAKeys file:\n\n%s\n\n%s\n\n%s\n",
						ca.Fingerprint, ca.PublicKey, ca.Setup, principalsText(ca))
					return nil
				}
				// stdout is the line alone, for the TrustedUserCAKeys file.
				fmt.Fprintln(r.out(), ca.PublicKey)
				fmt.Fprintln(r.env.Stderr, principalsText(ca))
				return nil
			},
		}
		c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
		if init {
			c.Flags().StringArrayVar(&principals, "principal", nil,
				"a bastion user the CA may sign certificates for (repeatable); without any, it signs for every user a connection names")
		}
		return c
	}
	cmd.AddCommand(show(true), show(false), r.sshCAPrincipalsCommand())
	return cmd
}

// sshCAPrincipalsCommand is `ssh-ca principals`: print the CA's list, or
// replace it (USER...), or remove it (--any).
func (r *runner) sshCAPrincipalsCommand() *cobra.Command {
	var output string
	var anyUser bool
	c := &cobra.Command{
		Use:   "principals [USER...]",
		Short: "Print or set the bastion users the SSH CA may sign certificates for (setting: an admin)",
		Long: `Without arguments, print the bastion users pgrelay's SSH CA may sign certificates
for. With USER arguments, replace the list with them (an admin): certificate connections
whose hop user is not in the list are refused when they are saved, and no certificate
is signed for them any more (connections saved before fail with a clear error until
their hop user is changed or allowed). --any removes the list: the CA then signs for
any user a connection names, so anyone who may change connections (editors included)
can log in as any user of every bastion that trusts the CA. Not recommended.`,
		Example: "  pgrelay ssh-ca principals                 # print the list\n" +
			"  pgrelay ssh-ca principals dbtcloud etl    # allow these bastion users only\n" +
			"  pgrelay ssh-ca principals --any           # allow any user (not recommended)",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if anyUser && len(args) > 0 {
				return usagef("--any removes the list and takes no USER arguments, but got %s: give either USER... or --any",
					quoteArgs(args))
			}
			svc, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			var ca *app.SSHCAView
			changed := anyUser || len(args) > 0
			if changed {
				ca, err = svc.SetSSHCAPrincipals(cmd.Context(), app.SSHCAPrincipals{Principals: args, Any: anyUser})
				err = principalsInCLIWords(err, func(i int) string { return fmt.Sprintf("USER argument %d", i+1) })
			} else {
				ca, err = svc.SSHCA(cmd.Context())
			}
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(r.out(), ca)
			}
			if changed {
				fmt.Fprint(r.out(), "SSH CA principals set. ")
			}
			fmt.Fprintln(r.out(), principalsText(ca))
			return nil
		},
	}
	c.Flags().BoolVar(&anyUser, "any", false, "remove the list: the CA signs for any user a connection names (not recommended)")
	c.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return c
}

// principalsText says which principals the CA may sign for, with a
// warning when it may sign for any.
func principalsText(ca *app.SSHCAView) string {
	if ca.AnyPrincipal {
		return "Warning: " + ca.PrincipalsNote()
	}
	return ca.PrincipalsNote()
}

// principalsInCLIWords names the fields of the problems of a principals
// list in err as this command line gives them: principals[i] by name(i),
// principals and any by the flags. It returns err.
func principalsInCLIWords(err error, name func(i int) string) error {
	var ve *app.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	ve.Subject = fielderr.SSHCA
	for i, p := range ve.Problems {
		var n int
		if _, serr := fmt.Sscanf(p.Field, "principals[%d]", &n); serr == nil {
			ve.Problems[i].Field = name(n)
			continue
		}
		switch p.Field {
		case "principals":
			ve.Problems[i].Field = name(0)
		case "any":
			ve.Problems[i].Field = "--any"
		}
	}
	return err
}
