package cli

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/fielderr"
)

func (r *runner) tokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens (admin, editor, viewer)",
		Long: `API tokens authenticate to 'pgrelay serve' (REST API, web UI, remote CLI).
Roles: admin (everything, tokens), editor (connections, queries), viewer (read only,
no secrets, no queries). A token is shown once; only its hash is stored.
Without --server these commands work on the local data dir.`,
	}
	cmd.AddCommand(r.tokenCreateCommand(), r.tokenListCommand(), r.tokenRevokeCommand())
	return cmd
}

func (r *runner) tokenCreateCommand() *cobra.Command {
	var name, role, output string
	cmd := &cobra.Command{
		Use:     "create",
		Short:   "Create a token (shown once)",
		Example: "  pgrelay token create --role viewer --name dashboard",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if role == "" {
				return usagef("--role is required: accepted are admin, editor and viewer")
			}
			rl, err := auth.ParseRole(role)
			if err != nil {
				return usagef("--role: %v", err)
			}
			if name == "" {
				name = fmt.Sprintf("%s-%s", rl, time.Now().UTC().Format("20060102-150405"))
			}
			b, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			nt, err := b.CreateToken(cmd.Context(), name, rl)
			if err != nil {
				return tokenProblems(err)
			}
			if output == "json" {
				return writeJSON(r.out(), nt)
			}
			fmt.Fprintf(r.out(), "Token %q (%s, id %s) created. It is shown only now; store it safely:\n\n%s\n\n", nt.Name, nt.Role, nt.ID, nt.Token)
			server := r.server
			if r.remote == nil || server == "" {
				// Made in the local data dir: the server is whichever
				// `pgrelay serve` serves it.
				server = "<URL of pgrelay serve, e.g. http://127.0.0.1:8080>"
			}
			fmt.Fprintf(r.out(), "Use it with: export PGRELAY_SERVER=%s PGRELAY_TOKEN=<token>\n", server)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "a name to recognise the token by (default ROLE-DATE)")
	cmd.Flags().StringVar(&role, "role", "", "admin, editor or viewer (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// tokenProblems marks the validation problems in err as a token's (named
// by its flags, --name and --role), when a server's answer, which does not
// say, left their subject empty: against a server, a bad --name read
// "invalid request: name: ..." where locally it reads "invalid token:
// --name: ...". It returns err.
func tokenProblems(err error) error {
	var ve *app.ValidationError
	if errors.As(err, &ve) && ve.Subject == "" {
		ve.Subject = fielderr.Token
	}
	return err
}

func (r *runner) tokenListCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List tokens (never the tokens themselves)",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			b, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			ts, err := b.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				if ts == nil {
					ts = []app.TokenView{}
				}
				return writeJSON(r.out(), ts)
			}
			tw := tabwriter.NewWriter(r.out(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED\tLAST USED\tSTATE")
			for _, t := range ts {
				used, state := "never", "active"
				if t.LastUsedAt != nil {
					used = t.LastUsedAt.Format(time.RFC3339)
				}
				if t.RevokedAt != nil {
					state = "revoked " + t.RevokedAt.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, t.CreatedAt.Format(time.RFC3339), used, state)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func (r *runner) tokenRevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID|NAME",
		Short: "Revoke a token: it stops working everywhere at once",
		Args:  exactArgs(1, "ID or NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			t, err := b.RevokeToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(r.out(), "Token %q (%s, id %s) revoked.\n", t.Name, t.Role, t.ID)
			return nil
		},
	}
}
