package cli

import (
	"errors"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/remote"
)

// Environment variables of remote mode.
const (
	serverEnv       = "PGRELAY_SERVER"
	tokenEnv        = "PGRELAY_TOKEN"
	insecureHTTPEnv = "PGRELAY_INSECURE_HTTP"
)

// The API client runs the same use cases as the local service.

// localOnlyReason says why a top-level command cannot run against a
// server, or "" when it can.
func localOnlyReason(name string) string {
	switch name {
	case "proxy":
		return "proxy does not work against a server (--server or " + serverEnv + "): it needs the connection's SSH private key, " +
			"which never leaves the server. Run `pgrelay proxy` on the server's machine with its data dir, or unset " + serverEnv
	case "serve":
		return "serve does not take --server: it always serves the local data dir (" + serverEnv + " in the environment is ignored by serve)"
	}
	return ""
}

// setupRemote switches the run to remote mode when a server is given by
// --server or PGRELAY_SERVER (the flag wins, so --server="" forces local
// mode; serve ignores PGRELAY_SERVER): r.remote becomes an API client
// authenticated by --token or PGRELAY_TOKEN. Plain http to a host other
// than this machine is refused unless --insecure-http or
// PGRELAY_INSECURE_HTTP allows it (see insecureHTTPError).
func (r *runner) setupRemote(cmd *cobra.Command) error {
	flags := cmd.Root().PersistentFlags()
	server, token := r.server, r.token
	serverFrom := "--server"
	if !flags.Changed("server") {
		serverFrom = serverEnv
		server = r.env.Getenv(serverEnv)
		if server != "" && cmd.Parent() == cmd.Root() && cmd.Name() == "serve" {
			// serve always serves the local data dir: PGRELAY_SERVER in
			// the shell is meant for the CLI commands that talk to it.
			r.logger.Debug("serve ignores "+serverEnv+": it serves the local data dir", "server", server)
			server = ""
		}
	}
	if !flags.Changed("token") {
		token = r.env.Getenv(tokenEnv)
	}
	if server == "" {
		if flags.Changed("token") {
			return usagef("--token is used only with --server (or %s); without a server, commands work on the local data dir", serverEnv)
		}
		if flags.Changed("insecure-http") {
			return usagef("--insecure-http is used only with --server (or %s); without a server, commands work on the local data dir", serverEnv)
		}
		return nil
	}
	if cmd.Parent() == cmd.Root() {
		if why := localOnlyReason(cmd.Name()); why != "" {
			return usagef("%s", why)
		}
	}
	if token == "" {
		return usagef("server %s needs an API token: set %s (or --token, which other users can see in `ps`); "+
			"an admin creates one with `pgrelay token create --role editor`", server, tokenEnv)
	}
	insecure, err := r.insecureHTTP(flags.Changed("insecure-http"))
	if err != nil {
		return err
	}
	opts := []client.Option{client.WithUserAgent("pgrelay/" + Version)}
	if insecure {
		opts = append(opts, client.WithInsecureHTTP())
	}
	c, err := client.New(server, token, opts...)
	if errors.Is(err, client.ErrPlainHTTP) {
		return insecureHTTPError(serverFrom, server)
	}
	if err != nil {
		return usageError{err}
	}
	r.server = server
	r.remote = remote.New(c)
	return nil
}

// insecureHTTP reports whether plain http to a host that is not loopback
// is allowed: --insecure-http when given, else PGRELAY_INSECURE_HTTP.
func (r *runner) insecureHTTP(flagGiven bool) (bool, error) {
	if flagGiven {
		return r.allowInsecureHTTP, nil
	}
	v := strings.TrimSpace(r.env.Getenv(insecureHTTPEnv))
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, usagef("%s=%q: accepted are 1 or true (allow plain http to a server that is not loopback) and 0 or false", insecureHTTPEnv, v)
	}
	return b, nil
}

// insecureHTTPError refuses a server URL of plain http to a host that is
// not this machine, before anything is sent: every request carries the
// API token. from names where the URL came from (--server or
// PGRELAY_SERVER).
func insecureHTTPError(from, server string) error {
	return usagef("%s %s is plain http to a host that is not this machine: the API token would cross the network unencrypted. "+
		"Accepted is https://, or http:// to 127.0.0.0/8, ::1 or localhost; "+
		"on a network that protects the traffic itself (a service mesh's mutual TLS, a VPN), allow it with --insecure-http (or %s=1)",
		from, strings.TrimSpace(server), insecureHTTPEnv)
}

// remoteHint is added to the message of an error from the server that the
// user fixes on this side (the token).
func (r *runner) remoteHint(err error) string {
	if r.remote == nil {
		return ""
	}
	switch {
	case errors.Is(err, app.ErrUnauthenticated):
		return "\nCheck " + tokenEnv + " (or --token): the server " + r.server + " does not know the token, or it was revoked."
	case errors.Is(err, client.ErrForbidden):
		return "\nAsk an admin of " + r.server + " for a token with that role (`pgrelay token create --role ...`)."
	}
	return ""
}
