package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// hopFlags are the flags of `connection create` and `update` for chains of
// SSH hops, proxy commands, certificate logins and host authorities.
type hopFlags struct {
	hops            []string
	proxyCommand    string
	auth            string
	hostAuthorities []string
	hopKnownHosts   []string
	ownKeys         []string
}

// hopFlagNames are the names of hopFlags' flags, --ssh-hop first.
func hopFlagNames() []string {
	return []string{"ssh-hop", "ssh-proxy-command", "ssh-auth", "ssh-host-authority", "ssh-hop-known-host", "ssh-hop-own-key"}
}

func (f *hopFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVar(&f.hops, "ssh-hop", nil, "an SSH hop as user@host[:port] (IPv6: user@[addr]:port); repeat in order for a chain "+
		"of jump hosts: pgrelay connects to the first, each further hop through the one before, and the last forwards to the "+
		"database. The first is what --ssh-host/--ssh-user/--ssh-port set, so do not combine them. Every hop uses the "+
		"connection's key unless given its own (--ssh-hop-own-key) and has its own pinned host key; on update the hops given "+
		"replace the chain (a hop that stays, the same user@host:port, keeps its own key pair and pinned host keys)")
	fl.StringVar(&f.proxyCommand, "ssh-proxy-command", "", "a program and its arguments, run without a shell, whose standard "+
		"input and output carry the SSH connection to the first hop instead of TCP (OpenSSH's ProxyCommand), e.g. "+
		"'aws ssm start-session --target i-0abc --document-name AWS-StartSSHSession --parameters portNumber=22' or "+
		"'socat STDIO TCP:bastion.internal:22'; split at white space, or a JSON array for arguments with spaces; "+
		"a server runs only programs of its --allow-command list; \"\" removes it")
	fl.StringVar(&f.auth, "ssh-auth", "", "how pgrelay logs in to the hops: key (the connection's key pair in authorized_keys, "+
		"default) or certificate (a short-lived certificate per tunnel signed by pgrelay's SSH CA, which the hops trust with "+
		"TrustedUserCAKeys: see pgrelay ssh-ca init)")
	fl.StringArrayVar(&f.hostAuthorities, "ssh-host-authority", nil, "a known_hosts line with a marker, repeatable: "+
		"\"@cert-authority *.corp.example.com ssh-ed25519 AAAA...\" accepts host certificates that CA signed for the hosts "+
		"the pattern matches ([host]:port for another port than 22), without pinning; \"@revoked * ssh-ed25519 AAAA...\" "+
		"refuses that key always; @FILE reads lines from a file; the lines given replace the connection's, \"\" removes them")
	fl.StringArrayVar(&f.hopKnownHosts, "ssh-hop-known-host", nil, "N=KEY: the host key of hop N (from 1), pinned at once, "+
		"as --ssh-known-host for the first hop; KEY may be @FILE; repeatable")
	fl.StringArrayVar(&f.ownKeys, "ssh-hop-own-key", nil, "user@host[:port] of a hop after the first (one of the --ssh-hop "+
		"hops) that logs in with a key pair of its own instead of the connection's: pgrelay generates it and keeps it while "+
		"the hop stays, and connection public-key NAME --restricted prints its line; repeatable; the hops given replace "+
		"those that had their own key (whose key pairs are dropped), \"\" alone: none. rotate-key rotates a hop's own key with the connection's")
}

// apply sets the flags given onto spec.
func (f *hopFlags) apply(cmd *cobra.Command, spec *connection.Spec) error {
	ch := cmd.Flags().Changed
	if ch("ssh-hop") {
		for _, n := range []string{"ssh-host", "ssh-port", "ssh-user"} {
			if ch(n) {
				return usagef("--ssh-hop gives every hop, the first one included: drop --%s (or give the first hop as --ssh-host, --ssh-user and --ssh-port, and no --ssh-hop)", n)
			}
		}
		hops := make([]connection.Hop, 0, len(f.hops))
		for i, s := range f.hops {
			h, err := connection.ParseHop(s)
			if err != nil {
				return usagef("--ssh-hop (hop %d): %v", i+1, err)
			}
			hops = append(hops, h)
		}
		if len(hops) == 0 {
			return usagef("--ssh-hop: give at least one hop, or --no-ssh-tunnel to remove them")
		}
		// A hop that stays (the same user@host:port) keeps its own key
		// pair: only --ssh-hop-own-key changes which hops have one.
		if t := spec.Tunnel; t != nil {
			for i := range hops[1:] {
				h := &hops[i+1]
				h.OwnKey = slices.ContainsFunc(t.Next, func(o connection.Hop) bool { return o.OwnKey && o.String() == h.String() })
			}
		}
		spec.SetHops(hops)
	}
	anyOther := false
	for _, n := range hopFlagNames()[1:] {
		anyOther = anyOther || ch(n)
	}
	if !anyOther {
		return nil
	}
	if spec.Tunnel == nil {
		spec.Tunnel = &connection.Tunnel{}
	}
	t := spec.Tunnel
	if ch("ssh-proxy-command") {
		words, err := parseCommandFlag(f.proxyCommand)
		if err != nil {
			return usagef("--ssh-proxy-command: %v", err)
		}
		t.ProxyCommand = words
	}
	if ch("ssh-auth") {
		t.Auth = connection.SSHAuth(strings.ToLower(strings.TrimSpace(f.auth)))
	}
	if ch("ssh-host-authority") {
		lines, err := readLinesFlag("--ssh-host-authority", f.hostAuthorities)
		if err != nil {
			return err
		}
		t.HostAuthorities = lines
	}
	if ch("ssh-hop-known-host") {
		for _, v := range f.hopKnownHosts {
			n, key, ok := strings.Cut(v, "=")
			i, err := strconv.Atoi(strings.TrimSpace(n))
			if !ok || err != nil || i < 1 {
				return usagef("--ssh-hop-known-host %q: give N=KEY, the hop's place from 1 and its host key, e.g. 2=@/tmp/bastion-b.pub", v)
			}
			flag := fmt.Sprintf("--ssh-hop-known-host %d=...", i)
			known, err := readKnownHostFlag(flag, []string{key})
			if err != nil {
				return err
			}
			// The hop's host: the key is checked against it here, so
			// that a bad one is named as given (hop 1's would be named
			// --ssh-known-host by the connection's validation).
			var host string
			var port int
			switch {
			case i == 1 && ch("ssh-host"):
				host = cmd.Flags().Lookup("ssh-host").Value.String()
				port, _ = strconv.Atoi(cmd.Flags().Lookup("ssh-port").Value.String())
			case i == 1:
				host, port = t.Host, t.Port
			case i-2 < len(t.Next):
				host, port = t.Next[i-2].Host, t.Next[i-2].Port
			}
			hops := len(t.Next) + 1
			if t.Host == "" && !ch("ssh-host") {
				hops = 0
			}
			switch {
			case i > hops && hops == 0:
				return usagef("%s: the connection has no SSH hop: add them with --ssh-hop (or --ssh-host and --ssh-user)", flag)
			case i > hops:
				return usagef("%s: the connection has %d hop(s): accepted is N from 1 to %d", flag, hops, hops)
			}
			if port == 0 {
				port = connection.DefaultSSHPort
			}
			if host != "" {
				if _, err := sshkey.ParseKnownHosts(known, host, port); err != nil {
					return usagef("%s: %v", flag, err)
				}
			}
			if i == 1 {
				t.KnownHost = known
			} else {
				t.Next[i-2].KnownHost = known
			}
		}
	}
	if ch("ssh-hop-own-key") {
		if err := applyOwnKeys(t, f.ownKeys); err != nil {
			return err
		}
	}
	return nil
}

// applyOwnKeys gives the hops named in values (user@host[:port]) their
// own key pair and takes it from the others; "" alone names none.
func applyOwnKeys(t *connection.Tunnel, values []string) error {
	hops := t.Hops()
	var names []string
	for _, h := range hops[1:] {
		names = append(names, h.String())
	}
	accepted := "accepted is one of the hops after the first, as user@host[:port]: " + strings.Join(names, ", ")
	if len(names) == 0 {
		accepted = "the connection has one hop, which uses the connection's key pair: add hops with --ssh-hop first"
	}
	want := make([]bool, len(t.Next))
	for _, v := range values {
		if strings.TrimSpace(v) == "" {
			continue
		}
		h, err := connection.ParseHop(v)
		if err != nil {
			return usagef("--ssh-hop-own-key %q: %v", v, err)
		}
		same := func(o connection.Hop) bool { return o.User == h.User && o.Host == h.Host && o.Port == h.Port }
		if same(hops[0]) {
			return usagef("--ssh-hop-own-key %s: that is the first hop, which logs in with the connection's key pair; %s", h, accepted)
		}
		found := false
		for i, n := range t.Next {
			if same(n) {
				want[i], found = true, true
			}
		}
		if !found {
			return usagef("--ssh-hop-own-key %s is not a hop of the connection: %s", h, accepted)
		}
	}
	for i := range t.Next {
		t.Next[i].OwnKey = want[i]
	}
	return nil
}

// parseCommandFlag reads a command: a JSON array of words, or words
// separated by white space (no shell quoting). "" is no command.
func parseCommandFlag(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	if strings.HasPrefix(v, "[") {
		var words []string
		if err := json.Unmarshal([]byte(v), &words); err != nil {
			return nil, fmt.Errorf("not a JSON array of strings (%s): accepted is a JSON array such as [\"socat\", \"STDIO\", \"TCP:bastion.internal:22\"], or words split at white space such as 'socat STDIO TCP:bastion.internal:22'", jsonProblem(err))
		}
		return words, nil
	}
	if strings.ContainsAny(v, `'"\`) {
		return nil, fmt.Errorf("%q has quotes or backslashes, but the command runs without a shell and is only split at white space: "+
			"give arguments with spaces as a JSON array, e.g. '[\"prog\", \"an argument\"]'", v)
	}
	return strings.Fields(v), nil
}

// readLinesFlag reads the values of a repeatable flag of lines: @FILE
// reads the file's lines; "" alone clears.
func readLinesFlag(flag string, values []string) ([]string, error) {
	var out []string
	for _, v := range values {
		// "@cert-authority …" and "@revoked …" are lines, not files.
		if name, ok := strings.CutPrefix(v, "@"); ok && !isMarkerLine(v) {
			b, err := os.ReadFile(name)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && looksLikeMarkerLine(name) {
					// A marker alone, or a misspelt one: a line gone wrong.
					return nil, usagef("%s: %q is neither a known_hosts line with a marker nor a file to read: accepted is "+
						`"@cert-authority PATTERN KEY" (host certificates that KEY signed), "@revoked PATTERN KEY", `+
						"or @FILE, a file of such lines", flag, truncateFlagValue(v, 80))
				}
				return nil, usagef("%s: %v", flag, err)
			}
			v = string(b)
		}
		for line := range strings.SplitSeq(v, "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				out = append(out, line)
			}
		}
	}
	return out, nil
}

// looksLikeMarkerLine reports whether name, the part after "@" of a value
// that names no file, was meant as a known_hosts line: a marker without
// its pattern and key, or text with white space (a misspelt marker).
func looksLikeMarkerLine(name string) bool {
	m := strings.ToLower(name)
	return m == "cert-authority" || m == "revoked" || strings.ContainsAny(name, " \t")
}

// truncateFlagValue shortens v to at most n bytes (at a rune boundary) for
// an error message.
func truncateFlagValue(v string, n int) string {
	if len(v) <= n {
		return v
	}
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return v[:n] + "…"
}

// isMarkerLine reports whether v starts with a known_hosts marker
// (@cert-authority, @revoked) followed by white space.
func isMarkerLine(v string) bool {
	marker, rest, ok := strings.Cut(v, " ")
	if !ok {
		marker, rest, ok = strings.Cut(v, "\t")
	}
	m := strings.ToLower(marker)
	return ok && strings.TrimSpace(rest) != "" && (m == "@cert-authority" || m == "@revoked")
}

// jsonProblem says what is wrong with a JSON text in words (encoding/json
// names Go types: "cannot unmarshal number into Go value of type string").
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "a " + te.Value + " where a string belongs"
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%v at byte %d", se, se.Offset)
	}
	return "it ends before the array does"
}
