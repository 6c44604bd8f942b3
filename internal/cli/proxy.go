package cli

import (
	"fmt"
	"net"
	"net/netip"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/jobs"
)

func (r *runner) proxyCommand() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "proxy NAME",
		Short: "Serve a local endpoint that forwards to the connection's database (through its tunnel)",
		Long: `Serve a local TCP endpoint for psql, dbt or any PostgreSQL client. Each client
connection is forwarded to the database through the connection's SSH tunnel (one
SSH connection, one channel per client). Ctrl-C (SIGINT) or SIGTERM stops it.

pgrelay reads the start of each session, then forwards its bytes unchanged. It
encrypts and verifies the database connection per the connection's sslmode
(verify-full checks the server's real host name). Clients may connect with any
sslmode up to require: pgrelay answers TLS with a self-signed certificate of its
own, so verify-ca/verify-full against the endpoint is not meaningful. With TLS to
the endpoint and a SCRAM login, set channel_binding=disable (PGCHANNELBINDING), as
channel binding cannot pass through pgrelay. Authentication passes through to the
server, except for connections whose password is a token (--auth command, lakebase,
alloydb-iam): then clients log in with a random password of the proxy's own, printed
at start (SCRAM-SHA-256; channel binding works), and pgrelay logs in to the server
with the current token, a fresh one for each new session as tokens near expiry; the
token never reaches the client. A client that disappears without ending its session (killed
mid-statement) has its statement cancelled on the server; Ctrl-C in psql cancels
the statement as usual; stopping the proxy cancels the statements of the sessions
still open. A session lost with its tunnel (the bastion went silent) has its cancel
request sent again, with backoff, for up to 10 minutes, through a tunnel opened anew;
stopping the proxy makes one last attempt for each (up to 10 s; a second Ctrl-C quits
at once) and warns, with the backend's PID, of those it could not send.

The Go runtime is set for moving one SSH connection's data: GOGC=400 and
GOMAXPROCS=1, unless those environment variables are set.`,
		Example: `  pgrelay proxy wh --listen 127.0.0.1:6543
  psql "host=127.0.0.1 port=6543 dbname=analytics user=dbt"`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, port, err := net.SplitHostPort(listen); err != nil || !validPort(port) {
				return usagef("--listen %q: accepted is host:port, e.g. 127.0.0.1:6543 or [::1]:0 (port 0 picks a free one)", listen)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			// Runtime settings for moving one SSH connection's data
			// (relayRuntime); GOGC and GOMAXPROCS in the environment
			// still override them.
			defer r.relayRuntime()()
			svc, err := r.service(ctx)
			if err != nil {
				return err
			}
			ps, err := svc.Proxy(ctx, args[0], listen)
			if err != nil {
				return err
			}
			defer ps.Close()
			spec := ps.Session().Spec()
			shown, host, port := proxyAddress(listen, ps.Addr())
			via := "directly"
			if t := spec.Tunnel; t != nil {
				via = fmt.Sprintf("through SSH bastion %s@%s", t.User, hostPort(t.Host, t.Port))
				if len(t.Next) > 0 {
					parts := []string{}
					for _, h := range spec.Hops() {
						parts = append(parts, h.User+"@"+hostPort(h.Host, h.Port))
					}
					via = "through SSH hops " + strings.Join(parts, " → ")
				}
			}
			if !isLoopback(ps.Addr()) {
				// Anyone who reaches this address reaches the database
				// (through the tunnel, from the bastion's network).
				r.logger.Warn("proxy listens on an address that is not loopback", "listen", shown, "connection", args[0])
				fmt.Fprintf(r.env.Stderr, "Warning: --listen %s is not a loopback address: every machine that can reach it reaches the database of %s (only the database's own login protects it). Use 127.0.0.1 unless other machines must connect.\n",
					shown, args[0])
			}
			fmt.Fprintf(r.out(), "Listening on %s, forwarding to %s %s.\n", shown, hostPort(spec.Host, spec.Port), via)
			conninfo := fmt.Sprintf("host=%s port=%s dbname=%s user=%s", connValue(host), connValue(port), connValue(spec.Database), connValue(spec.User))
			if spec.SSLMode != "disable" && ps.LocalPassword().IsZero() {
				// The endpoint answers TLS with its own certificate, so a
				// SCRAM login bound to it fails at the server; libpq's
				// default (sslmode=prefer) would then log in a second
				// time without TLS, after a failed login on the server.
				conninfo += " channel_binding=disable"
			}
			fmt.Fprintf(r.out(), "Connect with: psql %s\n", jobs.ShellQuote(conninfo))
			if pw := ps.LocalPassword(); !pw.IsZero() {
				// Not a database credential: the proxy's own, for as long
				// as it runs; the token stays inside pgrelay.
				fmt.Fprintf(r.out(), "Password (this proxy's own, valid while it runs; pgrelay logs in with the connection's %s token): %s\n",
					spec.AuthKind(), pw.Reveal())
			}
			if spec.SSLMode != "disable" {
				binding := " (with TLS to this endpoint, also channel_binding=disable, as above)"
				if !ps.LocalPassword().IsZero() {
					binding = ""
				}
				fmt.Fprintf(r.out(), "pgrelay connects to the server with sslmode=%s; clients may use any sslmode up to require%s.\n", spec.SSLMode, binding)
			}
			fmt.Fprintln(r.out(), "Press Ctrl-C to stop.")
			err = ps.Serve(ctx)
			// A second Ctrl-C while Close sends the last cancel requests
			// (bounded by their time-out) ends the process at once.
			stop()
			if ctx.Err() != nil {
				fmt.Fprintln(r.out(), "Stopped.")
				return nil
			}
			return err
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "address to listen on (port 0 picks a free port, which is printed); another than loopback is warned about")
	return cmd
}

// proxyAddress says where a proxy asked to listen on listen (host:port)
// listens: the address as given, with the port actually bound (for port
// 0), and the host and port a client on this machine connects to: a
// wildcard address (0.0.0.0, ::, or no host) is reached at loopback.
func proxyAddress(listen string, bound net.Addr) (shown, host, port string) {
	host, _, _ = net.SplitHostPort(listen)
	_, port, _ = net.SplitHostPort(bound.String())
	shown = net.JoinHostPort(host, port)
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		switch {
		case host == "" || ip.Is4():
			host = "127.0.0.1"
		default:
			host = "::1"
		}
	}
	return shown, host, port
}

// isLoopback reports whether a listener's address accepts only local
// connections.
func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// validPort reports whether p is a port number, 0 to 65535.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

// connValue quotes a value of a libpq connection string when it needs it
// (empty, or with spaces, quotes or backslashes).
func connValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n'\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
