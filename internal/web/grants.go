package web

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/grants"
)

// The Permissions page of a connection (/connections/{name}/grants): a
// small form (target schema, source schemas, optionally another role) that
// audits the privileges a dbt run needs (see package grants) and shows
// each check and the SQL that grants what is missing. It opens the
// connection, so only roles that may use connections run it.

// maxRelationsShown bounds the relation names listed in one row.
const maxRelationsShown = 12

// grantsData is the data of the Permissions page.
type grantsData struct {
	C *app.ConnectionView
	// TargetSchema, SourceSchemas and Role are what was typed.
	TargetSchema, SourceSchemas, Role string
	// CreateSchemas is the box "the run creates schemas".
	CreateSchemas bool
	// Errors holds problems by field: target_schema, role.
	Errors map[string]string
	// Failure is why the audit could not run (the connection failed).
	Failure string
	// Result is the audit, once it ran.
	Result *grants.Result
	// Rows are the checks as the page lists them.
	Rows []grantRow
}

// grantRow is one line of the checks: one check, or the SELECT checks of
// a schema's relations together.
type grantRow struct {
	Status    grants.Status
	Privilege string
	Object    string
	Note      string
	// Missing lists relations that lack SELECT (at most
	// maxRelationsShown); More counts the rest.
	Missing []string
	More    int
}

// Field returns the problem of a field, or "".
func (d *grantsData) Field(key string) string { return d.Errors[key] }

func (u *UI) grantsPage(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	c, err := u.cfg.App.GetConnection(r.Context(), name)
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	d := &grantsData{C: c, TargetSchema: c.Schema}
	u.render(w, r, http.StatusOK, "grants", &page{Title: "Permissions of " + name, Nav: "connections", Session: s, Data: d})
}

func (u *UI) grantsAudit(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	ctx := r.Context()
	c, err := u.cfg.App.GetConnection(ctx, name)
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	d := &grantsData{C: c, Errors: map[string]string{},
		TargetSchema:  strings.TrimSpace(r.PostFormValue("target_schema")),
		SourceSchemas: r.PostFormValue("source_schemas"),
		Role:          strings.TrimSpace(r.PostFormValue("role")),
		CreateSchemas: r.PostFormValue("create_schemas") != ""}
	show := func(status int) {
		u.render(w, r, status, "grants", &page{Title: "Permissions of " + name, Nav: "connections", Session: s, Data: d})
	}
	if d.TargetSchema == "" && c.Schema == "" {
		d.Errors["target_schema"] = "required: the schema the dbt run writes to (the connection has no schema to default to)"
		show(http.StatusUnprocessableEntity)
		return
	}
	req := grants.Request{TargetSchema: d.TargetSchema, SourceSchemas: splitSchemas(d.SourceSchemas), Role: d.Role,
		CreateSchemas: d.CreateSchemas}
	res, err := u.cfg.App.Grants(ctx, name, req)
	switch {
	case errors.Is(err, grants.ErrRoleNotFound):
		d.Errors["role"] = fmt.Sprintf("there is no role %q on this server (names are case-sensitive)", d.Role)
		show(http.StatusUnprocessableEntity)
		return
	case errors.Is(err, app.ErrNotFound):
		u.appError(w, r, name, err)
		return
	case app.IsConnectFailure(err):
		d.Failure = err.Error()
		show(http.StatusBadGateway)
		return
	case err != nil:
		u.serverError(w, r, err)
		return
	}
	d.Result, d.Rows = res, grantRows(res)
	show(http.StatusOK)
}

// splitSchemas reads the source schemas field: one per line or separated
// by commas; names are kept as typed, without surrounding blanks.
func splitSchemas(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, part := range strings.Split(line, ",") {
			if p := strings.TrimSpace(part); p != "" && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// grantRows lists the checks, with the relations of each schema in one
// row (a schema may hold thousands), as `pgrelay grants` prints them.
func grantRows(res *grants.Result) []grantRow {
	var rows []grantRow
	for _, l := range res.Lines() {
		if c := l.Check; c != nil {
			rows = append(rows, grantRow{Status: c.Status, Privilege: c.Privilege, Object: c.Object(), Note: c.Note})
		} else {
			rows = append(rows, relationsRow(l))
		}
	}
	return rows
}

// relationsRow is the row of a line of relations: the SELECT checks of a
// schema's relations.
func relationsRow(l grants.Line) grantRow {
	row := grantRow{Status: grants.Granted, Privilege: "SELECT"}
	schema, rels, missing := l.Schema, l.Relations, l.NotGranted()
	switch {
	case len(rels) == 0:
		row.Status = grants.NotNeeded
		row.Object = "tables and views in schema " + grants.Display(schema)
		row.Note = "none there yet; the default privileges below cover those created later"
	case len(missing) == 0 && len(rels) == 1:
		row.Object = "the 1 table or view in schema " + grants.Display(schema)
	case len(missing) == 0:
		row.Object = fmt.Sprintf("all %d tables and views in schema %s", len(rels), grants.Display(schema))
	default:
		row.Status = grants.Missing
		row.Object = fmt.Sprintf("%d of %d tables and views in schema %s", len(missing), len(rels), grants.Display(schema))
		if len(rels) == 1 {
			row.Object = "the 1 table or view in schema " + grants.Display(schema)
		}
		if len(missing) > maxRelationsShown {
			row.More = len(missing) - maxRelationsShown
			missing = missing[:maxRelationsShown]
		}
		row.Missing = missing
	}
	return row
}
