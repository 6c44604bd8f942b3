package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	neturl "net/url"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/daemon"
	"github.com/pgrelay/pgrelay/internal/jsonesc"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/requestid"
)

func (r *runner) serveCommand() *cobra.Command {
	var addr, tlsCert, tlsKey, logFormat string
	var cf commandFlags
	var qf queueFlags
	var ef exposureFlags
	var af auditFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the web UI and the REST API (embedded SQLite store in the data dir)",
		Long: `Serve the web UI and the REST API on --listen (default http://127.0.0.1:8080).
The first start on an empty store prints a one-time admin token (or writes it to
--admin-token-file); create more with 'pgrelay token create'. SIGINT or SIGTERM
stop it gracefully. It refuses to start while master.key or the SQLite store in
the data dir can be read by other users than their owner.
PGRELAY_ADDR sets the address when --listen is not given. serve always serves the
local data dir: it ignores PGRELAY_SERVER, which is for the commands that use a server.`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if logFormat != "text" && logFormat != "json" {
				return usagef("--log-format %q: accepted are text and json", logFormat)
			}
			publicURL, err := parsePublicURL(ef.publicURL)
			if err != nil {
				return err
			}
			if ef.maxStreamsPerToken < 1 {
				return usagef("--max-streams-per-token %d: accepted is 1 or more", ef.maxStreamsPerToken)
			}
			metricsToken, err := readMetricsToken(ef.metricsTokenFile)
			if err != nil {
				return err
			}
			if err := checkServeTLSAndMetrics(tlsCert, tlsKey, ef.metricsAddr); err != nil {
				return err
			}
			if err := r.checkPrivateFiles(); err != nil {
				return err
			}
			if r.embeddedStore() {
				// Held while serving: master-key rotate refuses to run
				// under it (this process would go on with the old key).
				release, err := holdServeLock(r.dataDir)
				if err != nil {
					return err
				}
				defer release()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			ctx = audit.WithActor(ctx, audit.System("server")) // requests act as their token
			h := serveLogHandler(r.env.Stderr, logFormat, &slog.HandlerOptions{Level: r.level})
			r.logger = slog.New(requestid.NewHandler(h))
			policy, err := r.commandPolicy(cf)
			if err != nil {
				return err
			}
			if progs := policy.Allow.Programs(); len(progs) > 0 && policy.RunAs == nil {
				// Editors choose these programs' arguments: as pgrelay's
				// own user they read master.key and the store.
				r.logger.Warn("commands run as pgrelay's own user: an editor who saves a job or a connection can make an allowed program "+
					"read master.key and the store, that is every stored secret; run serve as root with --run-as USER to contain them "+
					"(README: Security)", "allowed_programs", progs)
			}
			r.warnReadableKeyFile()
			if err := qf.validate(); err != nil {
				return err
			}
			r.daemonCfg.Metrics = metrics.NewWithOptions(metrics.Options{ConnectionLabels: ef.metricsConnectionLabels})
			r.daemonCfg.Jobs = qf.jobsConfig(policy)
			// Proxy commands run only the programs of the allowlist here.
			r.daemonCfg.SSH.ProxyCommands = policy
			r.daemonCfg.SSH.WarmTunnels = qf.sshWarm
			r.daemonCfg.HTTP = &daemon.HTTPConfig{Addr: addr, TLSCertFile: tlsCert, TLSKeyFile: tlsKey, PublicURL: publicURL, WebUI: true,
				MetricsAddr: ef.metricsAddr, MetricsToken: metricsToken, MaxConnections: ef.maxConnections,
				MaxStreamsPerToken: ef.maxStreamsPerToken}
			r.daemonCfg.AuditRetention = af.retention
			// Run event streams end with ctx, so that a graceful stop does
			// not wait for the runs they follow.
			d, err := r.localDaemon(ctx)
			if err != nil {
				return err
			}
			if err := d.Start(ctx); err != nil {
				return err
			}
			defer func() {
				sctx, cancel := context.WithTimeout(context.Background(), queue.DefaultShutdownGrace+30*time.Second)
				defer cancel()
				if err := d.Stop(sctx); err != nil {
					r.logger.Warn("job queue stop", "error", err)
				}
				r.logger.Info("stopped")
			}()
			svc, srv := d.App(), d.Server()
			ln, err := srv.Listen(ctx)
			if err != nil {
				return err
			}
			scheme := "http"
			if srv.TLS() {
				scheme = "https"
			}
			url := fmt.Sprintf("%s://%s", scheme, ln.Addr())
			if publicURL != nil {
				url = publicURL.String()
			}
			tokenFile, err := r.adminTokenOutput(ctx, svc, ef.adminTokenFile)
			if err != nil {
				_ = ln.Close()
				_ = srv.CloseMetricsListener()
				return err
			}
			nt, err := svc.BootstrapAdmin(ctx)
			if err == nil && tokenFile != nil {
				err = writeAdminToken(tokenFile, nt)
			}
			if err != nil {
				_ = ln.Close()
				_ = srv.CloseMetricsListener()
				return err
			}
			where := "data dir " + r.dataDir
			if t := r.storeTarget(); isPostgresURL(t) {
				where = "store " + redactURL(t)
			}
			if publicURL != nil {
				fmt.Fprintf(r.out(), "pgrelay %s serving the web UI and API on %s (listening on %s://%s, %s)\n",
					Version, url, scheme, ln.Addr(), where)
			} else {
				fmt.Fprintf(r.out(), "pgrelay %s serving the web UI and API on %s (%s)\n", Version, url, where)
			}
			metricsAddr := ln.Addr().String()
			if ma := srv.MetricsAddr(); ma != nil {
				metricsAddr = ma.String()
				fmt.Fprintf(r.out(), "Prometheus metrics on %s://%s/metrics\n", scheme, ma)
			}
			if nt != nil && tokenFile != nil {
				fmt.Fprintf(r.out(), `
The store had no API token yet, so an admin token was created and written to %s
(mode 0600). Open %s and sign in with it; create tokens for people and automation with
    pgrelay token create --role editor|viewer [--name NAME]

`, tokenFile.Name(), url)
			} else if nt != nil {
				cliURL, clearNote := cliServerURL(url)
				fmt.Fprintf(r.out(), `
The store had no API token yet, so an admin token was created. It is shown only now:

    %s

Open %s and sign in with it. Create tokens for people and automation with
    pgrelay token create --role editor|viewer [--name NAME]
and use the CLI against this server with
    export PGRELAY_SERVER=%s PGRELAY_TOKEN=<token>
%s
`, nt.Token, url, cliURL, clearNote)
			}
			r.logger.Info("serving", "addr", ln.Addr().String(), "tls", srv.TLS(), "data_dir", r.dataDir,
				"metrics_addr", metricsAddr, "max_connections", ef.maxConnections)
			err = srv.Serve(ctx, ln)
			// The runs in progress still get their shutdown grace (the
			// deferred stop above), after which "stopped" is said.
			r.logger.Info("stopping: no more requests are served; runs in progress get the shutdown grace")
			return err
		},
	}
	r.addListenFlag(cmd, &addr)
	cmd.Flags().StringVar(&tlsCert, "tls-cert", "", "PEM certificate file: serve HTTPS (with --tls-key)")
	cmd.Flags().StringVar(&tlsKey, "tls-key", "", "PEM private key file of --tls-cert")
	cmd.Flags().StringVar(&logFormat, "log-format", "text", "log format on stderr: text or json")
	cf.register(cmd)
	intVar(cmd.Flags(), &qf.maxRuns, "max-runs", queue.DefaultMaxRuns, "at most this many runs at once in this process")
	cmd.Flags().DurationVar(&qf.lostAfter, "lost-after", queue.DefaultLostAfter,
		"fail (or retry) a running run whose process sent no heartbeat for this long; heartbeats go every third of it, at most 5s; on a PostgreSQL store a run whose heartbeats this process could not save for this long is stopped by it. Use the same value in every process sharing a store")
	cmd.Flags().DurationVar(&qf.reapInterval, "reap-interval", queue.DefaultReapInterval, "how often this process looks for runs whose process was lost")
	addRunFlags(cmd.Flags(), &qf)
	cmd.Flags().BoolVar(&qf.healthChecks, "health-checks", true,
		"run the scheduled tests of connections that have a health_check_interval (--health-check-interval) and record them in their health; one process of those sharing a store runs them at a time")
	cmd.Flags().DurationVar(&qf.sshWarm, "ssh-warm", 0,
		"keep a run's SSH tunnel open this long after the run, for the next run of the same connection, which then skips every hop's "+
			"SSH handshake (e.g. 60s; 0 closes it when the run ends); up to --max-runs tunnels per connection. A kept tunnel keeps its keepalives, must answer one before it is "+
			"reused, and is reused only while the connection (hops, keys, pinned host keys) is unchanged; never for certificate logins")
	ef.register(cmd.Flags())
	af.register(cmd.Flags())
	return cmd
}

// serveLogHandler is serve's log handler on w in format (text or json).
// Its lines may quote a job's command (a run's reason): the text format
// quotes every control character (\x1b, \u009b); in JSON, which escapes
// only C0 controls, C1 controls and DEL are escaped as well (see
// jsonesc.Controls), as in the CLI's JSON output.
func serveLogHandler(w io.Writer, format string, opts *slog.HandlerOptions) slog.Handler {
	if format == "json" {
		return slog.NewJSONHandler(jsonControlsWriter{w}, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// jsonControlsWriter writes JSON to w with its C1 controls and DEL
// escaped. Each Write must be whole JSON values (a slog record is).
type jsonControlsWriter struct{ w io.Writer }

// Write implements io.Writer.
func (j jsonControlsWriter) Write(p []byte) (int, error) {
	if _, err := j.w.Write(jsonesc.Controls(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// cliServerURL is the PGRELAY_SERVER that serve's first start suggests
// for the CLI, given the URL it serves on: on a wildcard address (0.0.0.0,
// ::) this machine's loopback, as the CLI refuses plain http to any other
// host (client.SendsInClear). note, when not empty, says what plain http
// to a host that is not loopback needs.
func cliServerURL(served string) (_, note string) {
	u, err := neturl.Parse(served)
	if err != nil {
		return served, ""
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil && a.IsUnspecified() {
		u.Host = net.JoinHostPort("127.0.0.1", u.Port())
	}
	if client.SendsInClear(u) {
		note = "(plain http to another machine: the CLI takes it only with PGRELAY_INSECURE_HTTP=1 or --insecure-http,\n" +
			"on a network that protects the traffic itself; else serve HTTPS with --tls-cert and --tls-key)\n"
	}
	return u.String(), note
}

// checkServeTLSAndMetrics refuses, before anything starts, a
// --metrics-addr that is not host:port and a --tls-cert/--tls-key pair
// that cannot be loaded (found only once serve had said it was serving,
// with exit code 1).
func checkServeTLSAndMetrics(cert, key, metricsAddr string) error {
	if metricsAddr != "" {
		if _, port, err := net.SplitHostPort(metricsAddr); err != nil || !validPort(port) {
			return usagef("--metrics-addr %q: accepted is host:port, e.g. 127.0.0.1:9187 or [::1]:9187", metricsAddr)
		}
	}
	if cert == "" || key == "" {
		return nil // the server says that they go together
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		return usagef("--tls-cert %s --tls-key %s: %v; accepted are a PEM certificate (chain) file and the PEM file of its private key", cert, key, err)
	}
	return nil
}
