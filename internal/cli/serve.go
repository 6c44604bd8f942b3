package cli

import (
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/server"
	"github.com/pgrelay/pgrelay/internal/web"
)

func (r *runner) serveCommand() *cobra.Command {
	var addr, tlsCert, tlsKey, logFormat string
	var allowCommands []string
	var qf queueFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the web UI and the REST API (embedded SQLite store in the data dir)",
		Long: `Serve the web UI and the REST API on --listen (default http://127.0.0.1:8080).
The first start on an empty store prints a one-time admin token; create more with
'pgrelay token create'. SIGINT or SIGTERM stop it gracefully.
PGRELAY_ADDR sets the address when --listen is not given. serve always serves the
local data dir: it ignores PGRELAY_SERVER, which is for the commands that use a server.`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if logFormat != "text" && logFormat != "json" {
				return usagef("--log-format %q: accepted are text and json", logFormat)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			var h slog.Handler
			opts := &slog.HandlerOptions{Level: r.level}
			if logFormat == "json" {
				h = slog.NewJSONHandler(r.env.Stderr, opts)
			} else {
				h = slog.NewTextHandler(r.env.Stderr, opts)
			}
			r.logger = slog.New(requestid.NewHandler(h))
			m := metrics.New()
			r.metrics = m
			svc, err := r.service(ctx)
			if err != nil {
				return err
			}
			sessions, err := auth.NewSessions(svc.Keyring().DeriveKey("web sessions"), nil)
			if err != nil {
				return err
			}
			ui, err := web.New(web.Config{App: svc, Sessions: sessions, Logger: r.logger, SecureCookies: tlsCert != ""})
			if err != nil {
				return err
			}
			allow := map[string]bool{}
			for _, c := range allowCommands {
				allow[c] = true
			}
			q, stopQueue, err := r.startQueue(ctx, svc, qf, func(prog string) error {
				if allow[prog] {
					return nil
				}
				return fmt.Errorf("program %q is not allowed: the server runs only the programs given with --allow-command (now: %v); restart it with --allow-command %s", prog, allowCommands, prog)
			})
			if err != nil {
				return err
			}
			defer stopQueue()
			svc.SetQueue(q)
			// Run event streams end with ctx, so that a graceful stop does
			// not wait for the runs they follow.
			apiH := api.New(api.Config{App: svc, Sessions: sessions, Metrics: m, Logger: r.logger, Done: ctx.Done()})
			srv, err := server.New(server.Config{Addr: addr, TLSCertFile: tlsCert, TLSKeyFile: tlsKey,
				Faces: []server.Registrar{apiH, ui}, Ready: svc.Ready, Metrics: m, Logger: r.logger})
			if err != nil {
				return usageError{err}
			}
			ln, err := srv.Listen(ctx)
			if err != nil {
				return err
			}
			scheme := "http"
			if srv.TLS() {
				scheme = "https"
			}
			url := fmt.Sprintf("%s://%s", scheme, ln.Addr())
			nt, err := svc.BootstrapAdmin(ctx)
			if err != nil {
				_ = ln.Close()
				return err
			}
			fmt.Fprintf(r.out(), "pgrelay %s serving the web UI and API on %s (data dir %s)\n", Version, url, r.dataDir)
			if nt != nil {
				fmt.Fprintf(r.out(), `
This is a new store, so an admin token was created. It is shown only now:

    %s

Open %s and sign in with it. Create tokens for people and automation with
    pgrelay token create --role editor|viewer [--name NAME]
and use the CLI against this server with
    export PGRELAY_SERVER=%s PGRELAY_TOKEN=<token>

`, nt.Token, url, url)
			}
			r.logger.Info("serving", "addr", ln.Addr().String(), "tls", srv.TLS(), "data_dir", r.dataDir)
			err = srv.Serve(ctx, ln)
			r.logger.Info("stopped")
			return err
		},
	}
	r.addListenFlag(cmd, &addr)
	cmd.Flags().StringVar(&tlsCert, "tls-cert", "", "PEM certificate file: serve HTTPS (with --tls-key)")
	cmd.Flags().StringVar(&tlsKey, "tls-key", "", "PEM private key file of --tls-cert")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format on stderr: text or json")
	cmd.Flags().StringArrayVar(&allowCommands, "allow-command", nil, "a program command steps may run (repeatable), e.g. --allow-command dbt --allow-command psql")
	cmd.Flags().IntVar(&qf.maxRuns, "max-runs", queue.DefaultMaxRuns, "at most this many runs at once in this process")
	cmd.Flags().DurationVar(&qf.lostAfter, "lost-after", queue.DefaultLostAfter,
		"fail (or retry) a running run whose process sent no heartbeat for this long; heartbeats go every third of it, at most 5s. Use the same value in every process sharing a store")
	cmd.Flags().DurationVar(&qf.reapInterval, "reap-interval", queue.DefaultReapInterval, "how often this process looks for runs whose process was lost")
	return cmd
}
