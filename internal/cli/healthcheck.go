package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

func (r *runner) healthcheckCommand() *cobra.Command {
	var target string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when a pgrelay server answers /healthz (for container health checks)",
		Long: `Ask a pgrelay server for /healthz and exit 0 when it answers 200, 1 otherwise
(2 for a --url or --timeout it cannot take).
Container images without a shell or curl use it as their health check.`,
		Example: "  pgrelay healthcheck --url http://127.0.0.1:8080/healthz",
		Args:    exactArgs(0, ""),
		// Neither a data dir nor a server setting is needed.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, _ []string) error {
			// A bad flag is the command line's fault (exit 2), not the
			// server's: --timeout 0 used to fail every check with
			// "context deadline exceeded", and --url without a scheme
			// with Go's "unsupported protocol scheme" (both exit 1).
			if timeout <= 0 {
				return usagef("--timeout %s: accepted is a duration above 0, e.g. 5s", timeout)
			}
			if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return usagef("--url %q: accepted is an http:// or https:// URL, e.g. http://127.0.0.1:8080/healthz", shownURL(target))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			if err != nil {
				return usagef("--url %q: %v", shownURL(target), err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("healthcheck: %w", err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("healthcheck: %s answered %s", shownURL(target), resp.Status)
			}
			fmt.Fprintln(r.out(), "ok")
			return nil
		},
	}
	cmd.Flags().StringVar(&target, "url", "http://127.0.0.1:8080/healthz", "the server's /healthz URL")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}
