package cli

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/remote"
)

// Environment variables of remote mode.
const (
	serverEnv = "PGRELAY_SERVER"
	tokenEnv  = "PGRELAY_TOKEN"
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
// authenticated by --token or PGRELAY_TOKEN.
func (r *runner) setupRemote(cmd *cobra.Command) error {
	flags := cmd.Root().PersistentFlags()
	server, token := r.server, r.token
	if !flags.Changed("server") {
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
	c, err := client.New(server, token, client.WithUserAgent("pgrelay/"+Version))
	if err != nil {
		return usageError{err}
	}
	r.server = server
	r.remote = remote.New(c)
	return nil
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
