package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/grants"
)

func (r *runner) grantsCommand() *cobra.Command {
	var req grants.Request
	var output string
	cmd := &cobra.Command{
		Use:   "grants NAME --target-schema SCHEMA [--source-schema SCHEMA]...",
		Short: "Check the privileges a dbt run needs and print the GRANTs that add what is missing",
		Long: `Audit the privileges of the connection's user (or --role) in its database:
CONNECT on the database; CREATE on it when the target schema does not exist yet
or the run creates schemas (a job's SQL step with CREATE SCHEMA, even IF NOT
EXISTS, or --create-schemas for dbt models with custom schemas);
USAGE and CREATE on the target schema; USAGE on each source schema and SELECT on
every table, view, materialized view and foreign table in it; and default
privileges, so that tables created later in the source schemas stay readable.
Then print the statements an administrator runs to grant what is missing
(valid PostgreSQL, every identifier quoted). Exit code 0 when nothing is missing.`,
		Example: `  pgrelay grants wh --target-schema analytics --source-schema raw --source-schema stripe
  pgrelay grants wh --target-schema analytics --source-schema raw -o sql | psql "$ADMIN_URL"`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "text", "json", "sql"); err != nil {
				return err
			}
			gb, err := r.backend(cmd.Context())
			if err != nil {
				return err
			}
			res, err := gb.Grants(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			switch output {
			case "json":
				err = writeJSON(r.out(), res)
			case "sql":
				_, err = io.WriteString(r.out(), res.SQL())
			default:
				// Names of schemas and tables are the database's:
				// their control characters written out (-o sql keeps
				// them, to be run).
				var b strings.Builder
				printGrants(&b, res)
				_, err = io.WriteString(r.out(), showControls(b.String()))
			}
			if err != nil {
				return err
			}
			if !res.OK() {
				return &exitCodeError{code: exitFailure, msg: fmt.Sprintf("%s lacks %s in database %s",
					grants.Display(res.Role), countNoun(res.Missing(), "privilege"), grants.Display(res.Database))}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&req.TargetSchema, "target-schema", "", "schema the dbt run writes to (default: the connection's schema)")
	cmd.Flags().StringArrayVar(&req.SourceSchemas, "source-schema", nil, "schema the dbt run reads from; repeat for several")
	cmd.Flags().StringVar(&req.Role, "role", "", "audit this role instead of the connection's user")
	cmd.Flags().BoolVar(&req.CreateSchemas, "create-schemas", false, "the run creates schemas itself (SQL running CREATE SCHEMA, even IF NOT EXISTS; dbt models with custom schemas): CREATE on the database is needed (jobs on the connection with CREATE SCHEMA count without this flag)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json, or sql (only the statements)")
	return cmd
}

// printGrants prints each check, with the relations of a schema on one
// line, then the statements.
func printGrants(w io.Writer, res *grants.Result) {
	fmt.Fprintf(w, "Privileges of %s in database %s (target schema %s", grants.Display(res.Role),
		grants.Display(res.Database), grants.Display(res.Request.TargetSchema))
	if len(res.Request.SourceSchemas) > 0 {
		names := make([]string, len(res.Request.SourceSchemas))
		for i, s := range res.Request.SourceSchemas {
			names[i] = grants.Display(s)
		}
		fmt.Fprintf(w, "; source schemas %s", strings.Join(names, ", "))
	}
	fmt.Fprintln(w, "):")
	if res.Superuser {
		fmt.Fprintln(w, "  (a superuser: every privilege is granted)")
	}
	for _, l := range res.Lines() {
		if l.Check == nil {
			printRelations(w, l)
			continue
		}
		c := l.Check
		line := fmt.Sprintf("  %s %s on %s", grantMark(c.Status), c.Privilege, c.Object())
		switch {
		case c.Status == grants.NotNeeded && c.ObjectType == grants.ObjectDatabase && c.Privilege == "CREATE":
			line += ": not needed: " + c.Note + " (--create-schemas)"
		case c.Status == grants.NotNeeded:
			line += ": not needed: " + c.Note
		case c.Status == grants.NotFound:
			line += ": not found: " + c.Note
		case c.Note != "":
			line += ": " + c.Note
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w)
	switch {
	case res.OK():
		fmt.Fprintln(w, "Nothing is missing.")
	default:
		if res.Missing() > 0 {
			fmt.Fprintf(w, "%s missing.", countNoun(res.Missing(), "privilege"))
		}
		if res.Incomplete != "" {
			fmt.Fprintf(w, " Not checked yet: %s.", res.Incomplete)
		}
		fmt.Fprintln(w)
		if len(res.Statements) > 0 {
			fmt.Fprintf(w, "An administrator runs (as the owner of the objects or a superuser; -o sql prints only this):\n\n%s", res.SQL())
		}
	}
}

// printRelations summarises a line of relations: the SELECT checks of a
// schema's relations.
func printRelations(w io.Writer, l grants.Line) {
	schema, rels, missing := l.Schema, l.Relations, l.NotGranted()
	switch {
	case len(rels) == 0:
		fmt.Fprintf(w, "  %s SELECT on tables and views in %s: none there yet\n", grantMark(grants.Granted), grants.Display(schema))
	case len(missing) == 0:
		fmt.Fprintf(w, "  %s SELECT on all %d tables and views in %s\n", grantMark(grants.Granted), len(rels), grants.Display(schema))
	default:
		shown := missing
		more := ""
		if len(shown) > 10 {
			shown, more = shown[:10], fmt.Sprintf(" and %d more", len(missing)-10)
		}
		fmt.Fprintf(w, "  %s SELECT on %d of %d tables and views in %s: %s%s\n", grantMark(grants.Missing), len(missing),
			len(rels), grants.Display(schema), strings.Join(shown, ", "), more)
	}
}

func grantMark(s grants.Status) string {
	switch s {
	case grants.Granted:
		return "✓"
	case grants.Missing, grants.NotFound:
		return "✗"
	}
	return "–"
}
