package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/jsonesc"
)

func (r *runner) connectionCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "connection",
		Aliases: []string{"connections", "conn"},
		Short:   "Create, inspect and change saved connections",
	}
	cmd.AddCommand(r.connCreateCommand(), r.connUpdateCommand(), r.connListCommand(), r.connShowCommand(),
		r.connDeleteCommand(), r.connPublicKeyCommand(), r.connBastionSetupCommand(), r.connRotateKeyCommand(),
		r.connTrustHostKeyCommand(), r.connTestCommand())
	return cmd
}

// checkOutput validates an -o value against the accepted formats.
func checkOutput(o string, accepted ...string) error {
	for _, a := range accepted {
		if o == a {
			return nil
		}
	}
	return usagef("-o %q: accepted are %s", o, strings.Join(accepted, ", "))
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON output: %w", err)
	}
	// encoding/json escapes C0 controls (ESC is \u001b); C1 controls
	// and DEL too, so that no text in the output acts on a terminal.
	_, err = w.Write(append(jsonesc.Controls(b), '\n'))
	return err
}

func (r *runner) connCreateCommand() *cobra.Command {
	var f connFlags
	var af authFlags
	var output string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Save a new connection (with --ssh-host: generate its SSH key pair)",
		Example: `  DB_PASSWORD=... pgrelay connection create wh --flavor postgres \
      --host db.internal --port 5432 --database analytics --user dbt --password-env DB_PASSWORD \
      --ssh-host bastion.example.com --ssh-port 22 --ssh-user dbtcloud
  # through two jump hosts, the second one reached through the first:
  DB_PASSWORD=... pgrelay connection create wh2 --host db.internal --database analytics --user dbt \
      --password-env DB_PASSWORD --ssh-hop jump@bastion-a.example.com --ssh-hop jump@bastion-b.internal:2222`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			spec := connection.Spec{Name: args[0]}
			if err := f.apply(cmd, &spec); err != nil {
				return err
			}
			if err := af.apply(cmd, &spec, r.env, f.passwordStdin); err != nil {
				return err
			}
			pw, err := f.password(r.env)
			if err != nil {
				return err
			}
			if pw != nil {
				spec.Password = *pw
			}
			svc, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			v, err := svc.CreateConnection(cmd.Context(), spec)
			err = f.inFlagWords(cmd, err)
			if errors.Is(err, app.ErrExists) {
				return usagef("connection %q already exists: change it with `pgrelay connection update %s --FLAG VALUE` "+
					"(only the flags given change), or choose another name", spec.Name, spec.Name)
			}
			if err != nil {
				return err
			}
			if pw == nil && !spec.AuthKind().IsToken() {
				// Allowed (trust or peer logins, or the password given
				// later), but most often forgotten.
				fmt.Fprintf(r.env.Stderr, "Note: no password was given, so the server is asked without one; "+
					"if it wants one, give it with `pgrelay connection update %s --password-env VAR`.\n", spec.Name)
			}
			if output == "json" {
				return writeJSON(r.out(), v)
			}
			printSaved(r.out(), v, "saved")
			return nil
		},
	}
	f.register(cmd, false)
	af.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func (r *runner) connUpdateCommand() *cobra.Command {
	var f connFlags
	var af authFlags
	var output string
	cmd := &cobra.Command{
		Use:   "update NAME",
		Short: "Change a connection; only the flags given change (the password is kept unless given)",
		Example: `  pgrelay connection update wh --port 6432
  DB_PASSWORD=... pgrelay connection update wh --password-env DB_PASSWORD
  pgrelay connection update wh --no-ssh-tunnel`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			svc, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			cur, err := svc.GetConnection(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			spec := cur.Spec()
			hadTunnel, hadToken := spec.Tunnel != nil, spec.AuthKind().IsToken()
			if err := f.apply(cmd, &spec); err != nil {
				return err
			}
			if err := af.apply(cmd, &spec, r.env, f.passwordStdin); err != nil {
				return err
			}
			pw, err := f.password(r.env)
			if err != nil {
				return err
			}
			// The hops' authorized_keys lines before the update, to tell
			// which ones it changes.
			linesBefore := restrictedLines(cmd.Context(), svc, cur)
			v, err := svc.UpdateConnection(cmd.Context(), args[0], spec, pw)
			if err != nil {
				return f.inFlagWords(cmd, err)
			}
			if hadToken && !spec.AuthKind().IsToken() && !v.HasPassword {
				// From a token source back to the stored password, which
				// there is none of yet: most often forgotten.
				fmt.Fprintf(r.env.Stderr, "Note: the connection now uses the stored password, and none was given, so the server is asked without one; "+
					"if it wants one, give it with `pgrelay connection update %s --password-env VAR`.\n", v.Name)
			}
			if output == "json" {
				// The notice goes to stderr, the JSON alone to stdout.
				printOwnKeysDropped(cmd.Context(), svc, r.env.Stderr, cur, v)
				printOwnKeysGiven(cmd.Context(), svc, r.env.Stderr, cur, v)
				printHopLinesChanged(cmd.Context(), svc, r.env.Stderr, cur, v, linesBefore)
				return writeJSON(r.out(), v)
			}
			if v.UpdatedAt.Equal(cur.UpdatedAt) {
				// The server wrote nothing: the flags change no setting.
				given := 0
				cmd.LocalFlags().VisitAll(func(fl *pflag.Flag) {
					if fl.Changed && fl.Name != "output" {
						given++
					}
				})
				if given == 0 {
					fmt.Fprintf(r.out(), "Connection %q unchanged: no flag was given (only the settings of the flags given change: "+
						"see pgrelay connection update --help).\n", v.Name)
				} else {
					fmt.Fprintf(r.out(), "Connection %q unchanged: it already has the settings given.\n", v.Name)
				}
				return nil
			}
			if !hadTunnel && v.SSHTunnel != nil {
				printSaved(r.out(), v, "updated")
				return nil
			}
			fmt.Fprintf(r.out(), "Connection %q updated.\n", v.Name)
			if t := v.SSHTunnel; t != nil && t.PreviousPublicKey != "" && cur.SSHTunnel != nil && cur.SSHTunnel.PublicKey != t.PublicKey {
				fmt.Fprintf(r.out(), "\nA new key pair was generated. Install the new public key on the bastion:\n\n%s\n\nand remove the old one.\n", t.PublicKey)
			}
			printOwnKeysDropped(cmd.Context(), svc, r.out(), cur, v)
			printOwnKeysGiven(cmd.Context(), svc, r.out(), cur, v)
			printHopLinesChanged(cmd.Context(), svc, r.out(), cur, v, linesBefore)
			return nil
		},
	}
	f.register(cmd, true)
	af.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// printOwnKeysDropped tells, for each hop that stays in the chain but no
// longer has a key pair of its own (--ssh-hop-own-key without it), that it
// now logs in with the connection's key, and prints the line of that key
// to install on the hop: its line of `connection public-key NAME
// --restricted`. Certificate logins install no lines.
func printOwnKeysDropped(ctx context.Context, svc backend, w io.Writer, cur, v *app.ConnectionView) {
	if v.SSHTunnel == nil || v.SSHTunnel.Auth == connection.SSHAuthCertificate {
		return
	}
	var dropped []int
	for i, h := range v.SSHHops {
		if !h.OwnKey && slices.ContainsFunc(cur.SSHHops, func(o app.HopView) bool {
			return o.OwnKey && o.User == h.User && o.Host == h.Host && o.Port == h.Port
		}) {
			dropped = append(dropped, i)
		}
	}
	if len(dropped) == 0 {
		return
	}
	restricted, err := svc.PublicKey(ctx, v.Name, true)
	lines := strings.Split(restricted, "\n")
	for _, i := range dropped {
		h := v.SSHHops[i]
		fmt.Fprintf(w, "\nHop %d (%s@%s) no longer has a key pair of its own (its key pair was dropped): it now logs in with "+
			"the connection's key, which it accepts only once the connection's line is installed on it, as a line of "+
			"~%s/.ssh/authorized_keys in place of its own key's line", i+1, h.User, hostPort(h.Host, h.Port), h.User)
		printHopLine(w, v, i, lines, err)
	}
}

// printHopLine ends a notice about hop i of v: the hop's authorized_keys
// line (line i of lines, `connection public-key NAME --restricted`, read
// with err), or which line to take when it could not be read, and the
// bastion-setup script that installs it.
func printHopLine(w io.Writer, v *app.ConnectionView, i int, lines []string, err error) {
	if err != nil || len(lines) != len(v.SSHHops) {
		fmt.Fprintf(w, ": its line is line %d of: pgrelay connection public-key %s --restricted\n", i+1, v.Name)
	} else {
		fmt.Fprintf(w, ":\n\n%s\n\n", lines[i])
	}
	fmt.Fprintf(w, "Or run on the hop, as root, the script of: pgrelay connection bastion-setup %s --hop %d\n", v.Name, i+1)
}

// printOwnKeysGiven tells, for each hop that has a key pair of its own
// that it did not have before the update (--ssh-hop-own-key), that the hop
// accepts it only once its line is installed, and prints that line: its
// line of `connection public-key NAME --restricted`. Certificate logins
// install no lines.
func printOwnKeysGiven(ctx context.Context, svc backend, w io.Writer, cur, v *app.ConnectionView) {
	if v.SSHTunnel == nil || v.SSHTunnel.Auth == connection.SSHAuthCertificate {
		return
	}
	var given []int
	for i, h := range v.SSHHops {
		if h.OwnKey && !slices.ContainsFunc(cur.SSHHops, func(o app.HopView) bool {
			return o.OwnKey && o.User == h.User && o.Host == h.Host && o.Port == h.Port
		}) {
			given = append(given, i)
		}
	}
	if len(given) == 0 {
		return
	}
	restricted, err := svc.PublicKey(ctx, v.Name, true)
	lines := strings.Split(restricted, "\n")
	for _, i := range given {
		h := v.SSHHops[i]
		fmt.Fprintf(w, "\nHop %d (%s@%s) now logs in with a key pair of its own (%s), which it accepts only once "+
			"that key's line is installed on it, as a line of ~%s/.ssh/authorized_keys", i+1, h.User,
			hostPort(h.Host, h.Port), h.OwnKeyFingerprint, h.User)
		printHopLine(w, v, i, lines, err)
	}
}

// restrictedLines returns the authorized_keys line of each hop of v (its
// `connection public-key NAME --restricted`), or nil when v logs in with
// certificates, has no tunnel, or the lines are not one per hop (a key
// rotation under way).
func restrictedLines(ctx context.Context, svc backend, v *app.ConnectionView) []string {
	if v.SSHTunnel == nil || v.SSHTunnel.Auth == connection.SSHAuthCertificate {
		return nil
	}
	restricted, err := svc.PublicKey(ctx, v.Name, true)
	if err != nil {
		return nil
	}
	lines := strings.Split(strings.TrimSpace(restricted), "\n")
	if len(lines) != len(v.SSHHops) {
		return nil
	}
	return lines
}

// printHopLinesChanged tells, for each hop whose authorized_keys line the
// update changed (a new hop; the next hop or the database it forwards to
// moved, so its permitopen did), that the hop refuses the forward until
// that line is installed, and prints it. Hops whose own key pair came or
// went (printOwnKeysGiven, printOwnKeysDropped) and a new key pair of the
// connection are told about elsewhere. before holds the lines before the
// update (restrictedLines).
func printHopLinesChanged(ctx context.Context, svc backend, w io.Writer, cur, v *app.ConnectionView, before []string) {
	if before == nil || v.SSHTunnel == nil || cur.SSHTunnel == nil || cur.SSHTunnel.PublicKey != v.SSHTunnel.PublicKey {
		return
	}
	after := restrictedLines(ctx, svc, v)
	if after == nil {
		return
	}
	for i, h := range v.SSHHops {
		j := slices.IndexFunc(cur.SSHHops, func(o app.HopView) bool {
			return o.User == h.User && o.Host == h.Host && o.Port == h.Port
		})
		if j >= 0 && (before[j] == after[i] || cur.SSHHops[j].OwnKey != h.OwnKey) {
			continue
		}
		if j < 0 && h.OwnKey {
			continue // printOwnKeysGiven
		}
		what := "its line changed (where it may forward to moved), so it refuses the forward until the new line is installed " +
			"in place of the old one"
		if j < 0 {
			what = "it is new in the chain, and accepts the connection's key once this line is installed"
		}
		fmt.Fprintf(w, "\nHop %d (%s@%s): %s, as a line of ~%s/.ssh/authorized_keys:\n\n%s\n\n"+
			"Or run on the hop, as root, the script of: pgrelay connection bastion-setup %s --hop %d\n",
			i+1, h.User, hostPort(h.Host, h.Port), what, h.User, after[i], v.Name, i+1)
	}
}

// printSaved reports a saved connection and, with a tunnel, how to install
// its public key on the bastion.
func printSaved(w io.Writer, v *app.ConnectionView, verb string) {
	fmt.Fprintf(w, "Connection %q %s: %s.\n", v.Name, verb, summary(v))
	t := v.SSHTunnel
	if t == nil {
		fmt.Fprintf(w, "\nTest it, hop by hop: pgrelay connection test %s\n", v.Name)
		return
	}
	if printSavedHops(w, v) {
		return
	}
	fmt.Fprintf(w, `
A key pair was generated for this connection. Install its public key on the
bastion, as a line of ~%[1]s/.ssh/authorized_keys (~/.ssh mode 700, the file 600):

%[2]s

Safer, allowing only forwarding to %[3]s:%[4]d:
  pgrelay connection public-key %[5]s --restricted
To create the bastion user and install the key in one step, run this script on
the bastion as root:
  pgrelay connection bastion-setup %[5]s
Then test the connection, hop by hop: pgrelay connection test %[5]s
`, t.User, t.PublicKey, v.Host, v.Port, v.Name)
	switch {
	case len(t.HostKeyFingerprints) > 1:
		fmt.Fprintf(w, "The bastion's host keys %s are pinned: any other key is refused.\n", strings.Join(t.HostKeyFingerprints, ", "))
	case t.HostKeyFingerprint != "":
		fmt.Fprintf(w, "The bastion's host key %s is pinned: a different key is refused.\n", t.HostKeyFingerprint)
	default:
		fmt.Fprintln(w, "The bastion's host key is pinned on the first connection.")
	}
}

// summary describes v in one line, its control characters written out (see
// showControls): an editor may have put them in the database or user name.
func summary(v *app.ConnectionView) string {
	s := fmt.Sprintf("%s, %s as %s on %s", v.Flavor.Label(), v.Database, v.User, hostPort(v.Host, v.Port))
	if t := v.SSHTunnel; t != nil {
		if len(v.SSHHops) > 1 {
			s += " via SSH hops " + hopChain(v)
		} else {
			s += fmt.Sprintf(" via SSH bastion %s@%s", t.User, hostPort(t.Host, t.Port))
		}
	}
	return showControls(s)
}

func hostPort(h string, p int) string {
	if strings.Contains(h, ":") {
		return fmt.Sprintf("[%s]:%d", h, p)
	}
	return fmt.Sprintf("%s:%d", h, p)
}

func (r *runner) connListCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List saved connections",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			svc, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			vs, err := svc.ListConnections(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				if vs == nil {
					vs = []*app.ConnectionView{}
				}
				return writeJSON(r.out(), vs)
			}
			if len(vs) == 0 {
				fmt.Fprintln(r.out(), "No connections yet. Create one with: pgrelay connection create NAME --host HOST --database DB --user USER")
				return nil
			}
			tw := tabwriter.NewWriter(r.out(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tFLAVOR\tHOST\tDATABASE\tUSER\tSSL\tSSH TUNNEL\tHOST KEY")
			for _, v := range vs {
				tun, hk := "-", "-"
				if t := v.SSHTunnel; t != nil {
					tun = t.User + "@" + hostPort(t.Host, t.Port)
					if len(v.SSHHops) > 1 {
						tun += fmt.Sprintf(" (+%s)", countNoun(len(v.SSHHops)-1, "hop"))
					}
					hk = hopsHostKeyState(v)
				}
				// Names an editor chose are written out with their
				// control characters (see showControls).
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Flavor, showControls(hostPort(v.Host, v.Port)),
					showControls(v.Database), showControls(v.User), v.SSLMode, showControls(tun), hk)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func hostKeyState(t *app.TunnelView) string {
	switch {
	case t.PendingHostKeyFingerprint != "" && t.HostKeyFingerprint == "":
		return "NEW (approval needed)"
	case t.PendingHostKeyFingerprint != "":
		return "CHANGED (approval needed)"
	case t.HostKeyFingerprint != "":
		return "pinned"
	}
	return "not yet pinned"
}

func (r *runner) connShowCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a connection (never its secrets)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			svc, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			v, err := svc.GetConnection(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(r.out(), v)
			}
			printConnection(r.out(), v)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// printConnection writes v as a list of settings, their control characters
// written out (see showControls): whoever saved the connection chose its
// names, and whoever reads it may do so on a terminal.
func printConnection(w io.Writer, v *app.ConnectionView) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, showControls(v)) }
	row("Name:", v.Name)
	row("Flavor:", fmt.Sprintf("%s (%s)", v.Flavor, v.Flavor.Label()))
	row("Host:", v.Host)
	row("Port:", fmt.Sprint(v.Port))
	row("Database:", v.Database)
	row("User:", v.User)
	switch {
	case v.Auth != nil:
		row("Password:", "the token of the credential source below")
	case v.HasPassword:
		row("Password:", "set (encrypted at rest)")
	default:
		row("Password:", fmt.Sprintf("not set: the server is asked without one (give it with `pgrelay connection update %s --password-env VAR`)", v.Name))
	}
	printAuth(row, v, time.Now())
	row("SSL mode:", string(v.SSLMode))
	if v.SSLMode.Verifies() {
		if v.SSLRootCert != "" {
			ca := "custom CA certificate"
			if certs, err := connection.ParseCertificates(v.SSLRootCert); err == nil {
				ca = fmt.Sprintf("%s (expires %s)", certs[0].Subject.String(), certs[0].NotAfter.Format("2006-01-02"))
			}
			row("CA:", ca)
		} else {
			row("CA:", "system roots")
		}
	}
	if v.Role != "" {
		row("Role:", v.Role+" (sessions act as it: set at login)")
	}
	if v.Schema != "" {
		row("Schema:", v.Schema)
	}
	row("Threads:", fmt.Sprint(v.Threads))
	if t := v.SSHTunnel; t != nil {
		row("SSH tunnel:", fmt.Sprintf("%s@%s", t.User, hostPort(t.Host, t.Port)))
		printSSHHops(row, v)
		row("  Key:", fmt.Sprintf("%s %s (pgrelay connection public-key %s)", t.KeyType, t.PublicKeyFingerprint, v.Name))
		row("  Key login:", keyLoginState(v))
		printSSHExtras(row, v)
		row("  Keepalive:", fmt.Sprintf("every %s; dropped after %d missed replies (%s)", t.KeepaliveInterval,
			t.KeepaliveCountMax, time.Duration(t.KeepaliveInterval)*time.Duration(t.KeepaliveCountMax)))
		switch {
		case len(t.HostKeyFingerprints) > 1:
			row("  Host keys:", strings.Join(t.HostKeyFingerprints, ", ")+" (pinned; any of them is accepted)")
		case t.HostKeyFingerprint != "":
			row("  Host key:", t.HostKeyFingerprint+" (pinned)")
		default:
			row("  Host key:", fmt.Sprintf("not pinned yet: pinned on the first connection (with --host-key-policy approve, held "+
				"for approval instead); give it now with `pgrelay connection update %s --ssh-known-host \"ssh-ed25519 AAAA...\"`", v.Name))
		}
		if t.PendingHostKeyFingerprint != "" {
			seen := ""
			if t.PendingHostKeySeen != nil {
				seen = " on " + t.PendingHostKeySeen.Format(time.RFC3339)
			}
			label := "  CHANGED:"
			if t.HostKeyFingerprint == "" {
				label = "  PENDING:"
			}
			row(label, fmt.Sprintf("the bastion presented %s%s; approve it with: pgrelay connection trust-host-key %s --fingerprint %s",
				t.PendingHostKeyFingerprint, seen, v.Name, t.PendingHostKeyFingerprint))
		}
	} else {
		row("SSH tunnel:", "none (direct connection)")
	}
	row("Created:", v.CreatedAt.Format(time.RFC3339))
	row("Updated:", v.UpdatedAt.Format(time.RFC3339))
	_ = tw.Flush()
}

func (r *runner) connDeleteCommand() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a connection and its key pair",
		Args:    exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			svc, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			v, err := svc.GetConnection(cmd.Context(), name)
			if err != nil {
				return err
			}
			if !yes {
				if r.env.StdinIsTerminal == nil || !r.env.StdinIsTerminal() {
					return usagef("deleting connection %s needs confirmation: add --yes", name)
				}
				fmt.Fprintf(r.env.Stderr, "Delete connection %q (%s)? Its key pair is lost. Type the name to confirm: ", name, summary(v))
				answer, _ := readLine(r.env.Stdin)
				if strings.TrimSpace(answer) != name {
					return usagef("not deleted: confirmation did not match %q", name)
				}
			}
			if err := svc.DeleteConnection(cmd.Context(), name); err != nil {
				return err
			}
			fmt.Fprintf(r.out(), "Connection %q deleted.\n", name)
			if v.SSHTunnel != nil {
				fmt.Fprintf(r.out(), "Remove its public key from the bastion's authorized_keys:\n%s\n", v.SSHTunnel.PublicKey)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "delete without asking")
	return cmd
}

func readLine(r io.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for {
		n, err := r.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				return b.String(), nil
			}
			b.WriteByte(buf[0])
		}
		if err != nil {
			return b.String(), err
		}
	}
}

func (r *runner) connPublicKeyCommand() *cobra.Command {
	var restricted bool
	cmd := &cobra.Command{
		Use:   "public-key NAME",
		Short: "Print the connection's public key as an authorized_keys line",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			line, err := svc.PublicKey(cmd.Context(), args[0], restricted)
			if err != nil {
				return err
			}
			fmt.Fprintln(r.out(), line)
			return nil
		},
	}
	cmd.Flags().BoolVar(&restricted, "restricted", false, `prefix restrict,port-forwarding,permitopen="<db host>:<port>" so the key can only forward to the database; `+
		"for a chain of hops, print one line per hop, in order, each allowed to forward only to the next hop (the last one to the database), "+
		"each with the hop's own key where it has one (--ssh-hop-own-key)")
	return cmd
}

func (r *runner) connBastionSetupCommand() *cobra.Command {
	var hop int
	cmd := &cobra.Command{
		Use:   "bastion-setup NAME",
		Short: "Print a shell script that prepares the bastion user and installs the key",
		Long: `Print a shell script, to run as root on the bastion, that creates the tunnel user and
installs the connection's public key, allowed only to forward to the database. For a
chain of hops, --hop N prints the script of hop N, whose key may forward only to the next
hop. With --ssh-auth certificate, the script makes sshd trust pgrelay's SSH CA instead.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if hop < 1 {
				return usagef("--hop %d: accepted is a hop's place in the chain, from 1", hop)
			}
			svc, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			script, err := svc.BastionSetupHop(cmd.Context(), args[0], hop)
			var ve *app.ValidationError
			if errors.As(err, &ve) {
				// A hop past the chain's end: the problem is --hop's.
				for i, p := range ve.Problems {
					if p.Field == "hop" {
						ve.Problems[i].Field = "--hop"
					}
				}
			}
			if err != nil {
				return err
			}
			_, err = io.WriteString(r.out(), script)
			return err
		},
	}
	intVar(cmd.Flags(), &hop, "hop", 1, "the hop of a chain whose script to print, from 1")
	return cmd
}

func (r *runner) connTrustHostKeyCommand() *cobra.Command {
	var fingerprint string
	cmd := &cobra.Command{
		Use:   "trust-host-key NAME --fingerprint SHA256:...",
		Short: "Approve the host key a bastion presented (a changed key, or a first one under --host-key-policy approve)",
		Long: `Approve the host key a bastion presented: a changed key, or a first one under
--host-key-policy approve. Check the fingerprint on the bastion first
(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub).

Against a server, replacing a key that is pinned needs an admin token: the
connection's stored credentials would go to whatever presents the new key. An
editor may approve a first key, or the key presented instead of one that was
only given with the connection (--ssh-known-host) and never presented.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if fingerprint == "" {
				return usagef("--fingerprint is required: the SHA256 fingerprint of the new host key, as shown in the error or by `pgrelay connection show %s`", args[0])
			}
			svc, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			v, err := svc.TrustHostKey(cmd.Context(), args[0], fingerprint)
			if err != nil {
				return connectionProblems(err)
			}
			where := "bastion " + hostPort(v.SSHTunnel.Host, v.SSHTunnel.Port)
			for i, h := range v.SSHHops {
				if len(v.SSHHops) > 1 && h.HostKeyFingerprint == strings.TrimSpace(fingerprint) {
					where = fmt.Sprintf("hop %d of %d (%s)", i+1, len(v.SSHHops), hostPort(h.Host, h.Port))
				}
			}
			fmt.Fprintf(r.out(), "Host key %s of %s is now trusted for %q.\n", strings.TrimSpace(fingerprint), where, v.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&fingerprint, "fingerprint", "", "SHA256 fingerprint of the host key to trust")
	return cmd
}

// exactArgs checks the number of positional arguments with a clear
// message; names says what they are ("NAME", "NAME and SQL").
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) == n {
			return nil
		}
		if n == 0 {
			return usagef("%s takes no arguments, but got %s: %s; see %s --help", cmd.CommandPath(),
				countNoun(len(args), "argument"), quoteArgs(args), cmd.CommandPath())
		}
		got := "none"
		if len(args) > 0 {
			got = countNoun(len(args), "argument") + ": " + quoteArgs(args)
		}
		return usagef("%s needs %s, but got %s; see %s --help", cmd.CommandPath(), names, got, cmd.CommandPath())
	}
}

// countNoun says "1 argument", "2 arguments".
func countNoun[N ~int | ~int64](n N, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.FormatInt(int64(n), 10) + " " + noun + "s"
}

// wereRuns says "1 run was", "2 runs were".
func wereRuns(n int) string {
	if n == 1 {
		return "1 run was"
	}
	return countNoun(n, "run") + " were"
}

// quoteArgs shows arguments as a shell would take them back.
func quoteArgs(args []string) string {
	return jobs.ShellJoin(args)
}
