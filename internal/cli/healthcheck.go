package cli

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

func (r *runner) healthcheckCommand() *cobra.Command {
	var target string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 when a pgrelay server answers /healthz (for container health checks)",
		Long: `Ask a pgrelay server for /healthz and exit 0 when it answers 200, 1 otherwise.
Container images without a shell or curl use it as their health check.`,
		Example: "  pgrelay healthcheck --url http://127.0.0.1:8080/healthz",
		Args:    exactArgs(0, ""),
		// Neither a data dir nor a server setting is needed.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			if err != nil {
				return usagef("--url %q: %v", target, err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("healthcheck: %w", err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("healthcheck: %s answered %s", target, resp.Status)
			}
			fmt.Fprintln(r.out(), "ok")
			return nil
		},
	}
	cmd.Flags().StringVar(&target, "url", "http://127.0.0.1:8080/healthz", "the server's /healthz URL")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the answer")
	return cmd
}
