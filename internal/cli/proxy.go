package cli

import (
	"fmt"
	"net"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
)

// proxyGCPercent is the garbage collector's target (as GOGC) while
// `pgrelay proxy` serves, unless GOGC is set.
const proxyGCPercent = 400

func (r *runner) proxyCommand() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "proxy NAME",
		Short: "Serve a local endpoint that forwards to the connection's database (through its tunnel)",
		Long: `Serve a local TCP endpoint for psql, dbt or any PostgreSQL client. Each client
connection is forwarded to the database through the connection's SSH tunnel (one
SSH connection, one channel per client). TLS and authentication stay end to end
between the client and the server. Ctrl-C (SIGINT) or SIGTERM stops it.`,
		Example: `  pgrelay proxy wh --listen 127.0.0.1:6543
  psql "host=127.0.0.1 port=6543 dbname=analytics user=dbt"`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, _, err := net.SplitHostPort(listen); err != nil {
				return usagef("--listen %q: accepted is host:port, e.g. 127.0.0.1:6543 or [::1]:0 (port 0 picks a free one)", listen)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if r.env.Getenv("GOGC") == "" {
				// The SSH library allocates a fresh buffer for every packet
				// it receives (up to 32 KiB), so bulk transfers make
				// garbage at their own rate while the live heap stays
				// small: collecting at 5× the live heap instead of 2×
				// saves 15–30% of the proxy's CPU per COPY, for a few MB
				// of memory (docs/benchmarks.md). GOGC still overrides.
				defer debug.SetGCPercent(debug.SetGCPercent(proxyGCPercent))
			}
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
			host, port, _ := net.SplitHostPort(ps.Addr().String())
			via := "directly"
			if t := spec.Tunnel; t != nil {
				via = fmt.Sprintf("through SSH bastion %s@%s", t.User, hostPort(t.Host, t.Port))
			}
			fmt.Fprintf(r.out(), "Listening on %s, forwarding to %s %s.\n", ps.Addr(), hostPort(spec.Host, spec.Port), via)
			fmt.Fprintf(r.out(), "Connect with: psql \"host=%s port=%s dbname=%s user=%s\"\n", host, port, spec.Database, spec.User)
			if spec.SSLMode == "verify-full" {
				fmt.Fprintf(r.out(), "Note: clients verifying the server name must use sslmode=verify-ca (the server's certificate names %s, not %s).\n", spec.Host, host)
			}
			fmt.Fprintln(r.out(), "Press Ctrl-C to stop.")
			err = ps.Serve(ctx)
			if ctx.Err() != nil {
				fmt.Fprintln(r.out(), "Stopped.")
				return nil
			}
			return err
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "address to listen on (port 0 picks a free port, which is printed)")
	return cmd
}
