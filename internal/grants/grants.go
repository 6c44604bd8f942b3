// Package grants audits the privileges a dbt-style workload needs on a
// PostgreSQL database and writes the statements that grant what is missing.
//
// For one role (the session's current_user unless [Request.Role] names
// another) and one database (the session's), [Audit] checks:
//
//   - CONNECT on the database, which the server checks for the user that
//     logs in (session_user): when the audited role is the one the session
//     acts as (the connection's role setting, SET ROLE), CONNECT is that
//     user's, and the other privileges the role's;
//   - CREATE on the database, which CREATE SCHEMA needs, even with IF NOT
//     EXISTS and for a schema that exists (PostgreSQL checks the privilege
//     first). It counts as needed when the target schema does not exist
//     yet (dbt creates it, and the role then owns it) and when the
//     workload creates schemas itself ([Request.CreateSchemas]: a SQL step
//     running CREATE SCHEMA, dbt models with custom schemas); otherwise
//     dbt, which creates only the schemas that are missing, does without;
//   - TEMPORARY on the database: dbt creates temporary tables for
//     incremental models and snapshots. PUBLIC has it by default, but
//     REVOKE ALL ON DATABASE ... FROM PUBLIC takes it away with CONNECT;
//   - USAGE and CREATE on the target schema, when it exists;
//   - USAGE on each source schema, and SELECT on every table, view,
//     materialized view, foreign table and partitioned table in it, except
//     on a partition of a partitioned table the role can read: a query of
//     that table reads the partition without checking its privileges;
//   - default privileges, so that tables created later in a source schema
//     stay readable.
//
// Privileges are read with has_database_privilege, has_schema_privilege
// and has_table_privilege, which account for PUBLIC, role membership and
// superusers the way the server does.
//
// Default privileges apply per creating role: a table gets the default ACL
// of the role that creates it. The audit takes as creators of a source
// schema its owner and the owners of the relations already in it, and
// counts the default privileges of creator R as granted when the audited
// role inherits R's privileges (it is R or a member of R), or when
// pg_default_acl holds an entry of R for tables (objtype 'r'), either for
// the schema or global (namespace 0), whose ACL gives SELECT to the audited
// role, to a role it inherits from, or to PUBLIC. Schema entries add to the
// global one, so their union is what a new table gets. Tables created by a
// role that owns nothing in the schema yet cannot be foreseen.
//
// Every statement is valid PostgreSQL with every identifier quoted
// (pgx.Identifier.Sanitize): GRANT ... ON DATABASE, GRANT ... ON SCHEMA,
// GRANT SELECT ON ALL TABLES IN SCHEMA (which covers views, materialized
// views and foreign tables), and ALTER DEFAULT PRIVILEGES FOR ROLE ... IN
// SCHEMA ... GRANT SELECT ON TABLES.
package grants

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Request says what to audit.
type Request struct {
	// TargetSchema is the schema the workload writes to (dbt's target
	// schema). Required.
	TargetSchema string `json:"target_schema"`
	// SourceSchemas are the schemas it reads from.
	SourceSchemas []string `json:"source_schemas"`
	// Role is the role to audit; empty means the session's current_user.
	Role string `json:"role,omitempty"`
	// CreateSchemas says that the workload creates schemas itself: SQL
	// that runs CREATE SCHEMA (also with IF NOT EXISTS, which needs CREATE
	// on the database even when the schema exists), or dbt models with a
	// custom schema (dbt creates <target>_<custom>). CREATE on the
	// database is then needed even when the target schema exists.
	CreateSchemas bool `json:"create_schemas,omitempty"`
	// CreateSchemasWhy says what creates schemas (e.g. "job nightly runs
	// CREATE SCHEMA in step 1"), for the report; set by callers that know.
	CreateSchemasWhy string `json:"-"`
}

// Status is the outcome of a check.
type Status string

// Statuses.
const (
	// Granted: the role has the privilege.
	Granted Status = "granted"
	// Missing: the role lacks it; a statement in Result.Statements grants it.
	Missing Status = "missing"
	// NotNeeded: the privilege does not matter here (Check.Note says why).
	NotNeeded Status = "not_needed"
	// NotFound: the schema does not exist, so nothing can be granted on it.
	NotFound Status = "not_found"
)

// Object types of checks.
const (
	ObjectDatabase          = "database"
	ObjectSchema            = "schema"
	ObjectTable             = "table"
	ObjectView              = "view"
	ObjectMaterializedView  = "materialized_view"
	ObjectForeignTable      = "foreign_table"
	ObjectPartitionedTable  = "partitioned_table"
	ObjectDefaultPrivileges = "default_privileges"
)

// Check is one privilege on one object.
type Check struct {
	// ObjectType is one of the Object* constants.
	ObjectType string `json:"object_type"`
	// Schema is the schema of a schema, relation or default privileges
	// check.
	Schema string `json:"schema,omitempty"`
	// Name is the database, schema or relation name; for default
	// privileges, the creating role whose future tables are meant.
	Name string `json:"name"`
	// Privilege is CONNECT, CREATE, USAGE or SELECT.
	Privilege string `json:"privilege"`
	Status    Status `json:"status"`
	// Note explains a status that is not obvious.
	Note string `json:"note,omitempty"`
}

// Object renders the checked object for people: `database "x"`,
// `schema raw`, `raw.orders`, `future tables of loader in raw`.
func (c Check) Object() string {
	switch c.ObjectType {
	case ObjectDatabase:
		return "database " + Display(c.Name)
	case ObjectSchema:
		return "schema " + Display(c.Name)
	case ObjectDefaultPrivileges:
		return fmt.Sprintf("future tables of %s in schema %s", Display(c.Name), Display(c.Schema))
	}
	return strings.ReplaceAll(c.ObjectType, "_", " ") + " " + Display(c.Schema, c.Name)
}

// Statement is one SQL statement an administrator runs.
type Statement struct {
	// SQL is the statement, ending with a semicolon; or a comment ("-- ")
	// for something no statement can fix.
	SQL string `json:"sql"`
	// Reason says what it fixes and who may run it.
	Reason string `json:"reason"`
}

// Result is the outcome of an audit.
type Result struct {
	// Role is the audited role.
	Role string `json:"role"`
	// Database is the audited database.
	Database string `json:"database"`
	// Superuser is true when the role is a superuser: it has every
	// privilege.
	Superuser bool    `json:"superuser"`
	Request   Request `json:"request"`
	Checks    []Check `json:"checks"`
	// Statements grant what is missing, in the order to run them.
	Statements []Statement `json:"statements"`
	// Incomplete is set when some checks could not be made (the role may
	// not connect); it says why.
	Incomplete string `json:"incomplete,omitempty"`
}

// Missing counts the checks that are missing or not found.
func (r *Result) Missing() int {
	n := 0
	for _, c := range r.Checks {
		if c.Status == Missing || c.Status == NotFound {
			n++
		}
	}
	return n
}

// OK reports whether nothing is missing and every check could be made.
func (r *Result) OK() bool { return r.Missing() == 0 && r.Incomplete == "" }

// SQL returns the statements as a script, one per line, with each
// statement's reason as a comment above it.
func (r *Result) SQL() string {
	var b strings.Builder
	for _, s := range r.Statements {
		if s.Reason != "" {
			for _, line := range strings.Split(s.Reason, "\n") {
				b.WriteString("-- " + line + "\n")
			}
		}
		b.WriteString(s.SQL + "\n")
	}
	return b.String()
}

// IsRelation reports whether objectType is that of a table, a view or
// the like (what SELECT is checked on).
func IsRelation(objectType string) bool {
	switch objectType {
	case ObjectTable, ObjectView, ObjectMaterializedView, ObjectForeignTable, ObjectPartitionedTable:
		return true
	}
	return false
}

// Line is one line of a report of a Result: one check, or the SELECT
// checks of the relations of one schema together (a schema may hold
// thousands).
type Line struct {
	// Check is the check of a line of one check; nil on a line of
	// relations.
	Check *Check
	// Schema is the schema of a line of relations.
	Schema string
	// Relations are the relation checks of a line of relations; none for
	// a source schema without relations (whose default privileges follow).
	Relations []Check
}

// NotGranted returns the names of the relations of a line of relations
// that lack SELECT where it is needed, as Display renders them (not
// partitions read through their partitioned table).
func (l Line) NotGranted() []string {
	var names []string
	for _, c := range l.Relations {
		if c.Status == Missing || c.Status == NotFound {
			names = append(names, Display(c.Name))
		}
	}
	return names
}

// Lines returns the checks as a report shows them, in order: each run of
// relation checks of a schema in one line of relations, and before the
// default privileges of a schema without relations, an empty one.
func (r *Result) Lines() []Line {
	var lines []Line
	summarised := map[string]bool{} // schemas with a line of relations
	checks := r.Checks
	for i := 0; i < len(checks); {
		c := checks[i]
		if IsRelation(c.ObjectType) {
			j := i
			for j < len(checks) && IsRelation(checks[j].ObjectType) && checks[j].Schema == c.Schema {
				j++
			}
			lines = append(lines, Line{Schema: c.Schema, Relations: checks[i:j]})
			summarised[c.Schema] = true
			i = j
			continue
		}
		if c.ObjectType == ObjectDefaultPrivileges && !summarised[c.Schema] {
			lines = append(lines, Line{Schema: c.Schema}) // a source schema without relations
			summarised[c.Schema] = true
		}
		lines = append(lines, Line{Check: &checks[i]})
		i++
	}
	return lines
}

// Ident quotes an identifier, or a qualified name, for SQL.
func Ident(parts ...string) string { return pgx.Identifier(parts).Sanitize() }

// Display renders a name for people: bare when it is a plain lowercase
// identifier, quoted like SQL otherwise.
func Display(parts ...string) string {
	out := make([]string, len(parts))
	for i, p := range parts {
		if plainIdent(p) {
			out[i] = p
		} else {
			out[i] = Ident(p)
		}
	}
	return strings.Join(out, ".")
}

func plainIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '$'):
		default:
			return false
		}
	}
	return true
}

// ErrRoleNotFound is returned when Request.Role names no role.
var ErrRoleNotFound = errors.New("role does not exist")

// objectType maps a pg_class.relkind to an object type.
func objectType(relkind string) string {
	switch relkind {
	case "v":
		return ObjectView
	case "m":
		return ObjectMaterializedView
	case "f":
		return ObjectForeignTable
	case "p":
		return ObjectPartitionedTable
	}
	return ObjectTable
}

// Audit checks the privileges req asks about, for req.Role (default
// current_user) in the session's database, and returns the checks and the
// statements that grant what is missing. It only reads the catalog.
func Audit(ctx context.Context, conn *pgx.Conn, req Request) (*Result, error) {
	if strings.TrimSpace(req.TargetSchema) == "" {
		return nil, errors.New("grants audit: the target schema is required")
	}
	res := &Result{Request: req, Checks: []Check{}, Statements: []Statement{}}
	// The server checks CONNECT for the user that logged in (session_user),
	// the rest for the role the session acts as (current_user, which the
	// connection's role setting or SET ROLE changes).
	var login string
	err := conn.QueryRow(ctx, `SELECT current_database()::text, COALESCE(NULLIF($1::text, ''), current_user)::text,
			CASE WHEN $1::text IN ('', current_user) THEN session_user ELSE $1::text END::text`,
		req.Role).Scan(&res.Database, &res.Role, &login)
	if err != nil {
		return nil, fmt.Errorf("grants audit: read session: %w", err)
	}
	err = conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = $1`, res.Role).Scan(&res.Superuser)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("grants audit: %w: %q", ErrRoleNotFound, res.Role)
	}
	if err != nil {
		return nil, fmt.Errorf("grants audit: read role %q: %w", res.Role, err)
	}
	a := &auditor{conn: conn, res: res, role: res.Role, login: login}
	if err := a.database(ctx); err != nil {
		return nil, err
	}
	for _, s := range dedupe(req.SourceSchemas) {
		if err := a.source(ctx, s); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// ConnectDenied is the result for a role that may not connect to the
// database at all (the server refused the session with SQLSTATE 42501):
// CONNECT is missing, and the other checks wait until it is granted.
func ConnectDenied(database, role string, req Request) *Result {
	res := &Result{Role: role, Database: database, Request: req, Statements: []Statement{}}
	res.Checks = []Check{{ObjectType: ObjectDatabase, Name: database, Privilege: "CONNECT", Status: Missing,
		Note: "the server refused the session"}}
	res.Statements = append(res.Statements, Statement{
		SQL:    fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s;", Ident(database), Ident(role)),
		Reason: fmt.Sprintf("lets %s connect to database %s; run as its owner or a superuser", Display(role), Display(database)),
	})
	res.Incomplete = "the other privileges can only be checked once the role may connect: grant CONNECT, then audit again"
	return res
}

// auditor collects checks and statements.
type auditor struct {
	conn *pgx.Conn
	res  *Result
	role string
	// login is the user that logs in, for whom the server checks CONNECT:
	// the session's user when role is the role the session acts as, role
	// otherwise.
	login string
}

func (a *auditor) add(c Check) { a.res.Checks = append(a.res.Checks, c) }

func (a *auditor) stmt(sql, reason string) {
	a.res.Statements = append(a.res.Statements, Statement{SQL: sql, Reason: reason})
}

func status(granted bool) Status {
	if granted {
		return Granted
	}
	return Missing
}

// database checks CONNECT and CREATE on the database and the target schema.
func (a *auditor) database(ctx context.Context) error {
	target := a.res.Request.TargetSchema
	var connect, create, temp, exists, usage, createSchema bool
	err := a.conn.QueryRow(ctx, `SELECT
			has_database_privilege($3::name, current_database(), 'CONNECT'),
			has_database_privilege($1::name, current_database(), 'CREATE'),
			has_database_privilege($1::name, current_database(), 'TEMPORARY'),
			n.oid IS NOT NULL,
			COALESCE(has_schema_privilege($1::name, n.oid, 'USAGE'), false),
			COALESCE(has_schema_privilege($1::name, n.oid, 'CREATE'), false)
		FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = $2`,
		a.role, target, a.login).Scan(&connect, &create, &temp, &exists, &usage, &createSchema)
	if err != nil {
		return fmt.Errorf("grants audit: database privileges of %q: %w", a.role, err)
	}
	db := a.res.Database
	connectCheck := Check{ObjectType: ObjectDatabase, Name: db, Privilege: "CONNECT", Status: status(connect)}
	if a.login != a.role {
		connectCheck.Note = fmt.Sprintf("checked for %s, the user that logs in (the session acts as %s)", Display(a.login), Display(a.role))
		if !connect {
			a.stmt(fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO %s;", Ident(db), Ident(a.login)),
				fmt.Sprintf("lets %s connect to database %s; run as the database's owner or a superuser", Display(a.login), Display(db)))
			connect = true // granted to the login, not to the role below
		}
	}
	a.add(connectCheck)
	createCheck := a.databaseCreate(db, target, exists, create)
	a.add(createCheck)
	a.add(Check{ObjectType: ObjectDatabase, Name: db, Privilege: "TEMPORARY", Status: status(temp),
		Note: "dbt creates temporary tables for incremental models and snapshots"})
	var dbPrivs, does []string
	in := func(what string) string { // the first clause names the database
		if len(does) == 0 {
			return what + " database " + Display(db)
		}
		return what + " it"
	}
	if !connect {
		dbPrivs = append(dbPrivs, "CONNECT")
		does = append(does, in("connect to"))
	}
	if createCheck.Status == Missing {
		what := "the target schema " + Display(target)
		if exists {
			what = "schemas" // the workload creates them (Request.CreateSchemas)
		}
		dbPrivs = append(dbPrivs, "CREATE")
		does = append(does, in("create "+what+" in"))
	}
	if !temp {
		dbPrivs = append(dbPrivs, "TEMPORARY")
		does = append(does, in("create temporary tables (incremental models, snapshots) in"))
	}
	if len(dbPrivs) > 0 {
		why := does[0]
		for i, d := range does[1:] {
			if i == len(does)-2 {
				why += " and " + d
			} else {
				why += ", " + d
			}
		}
		a.stmt(fmt.Sprintf("GRANT %s ON DATABASE %s TO %s;", strings.Join(dbPrivs, ", "), Ident(db), Ident(a.role)),
			fmt.Sprintf("lets %s %s; run as the database's owner or a superuser", Display(a.role), why))
	}

	if !exists {
		note := fmt.Sprintf("the schema does not exist yet; %s will own it once it creates it", Display(a.role))
		a.add(Check{ObjectType: ObjectSchema, Schema: target, Name: target, Privilege: "USAGE", Status: NotNeeded, Note: note})
		a.add(Check{ObjectType: ObjectSchema, Schema: target, Name: target, Privilege: "CREATE", Status: NotNeeded, Note: note})
		return nil
	}
	a.add(Check{ObjectType: ObjectSchema, Schema: target, Name: target, Privilege: "USAGE", Status: status(usage)})
	a.add(Check{ObjectType: ObjectSchema, Schema: target, Name: target, Privilege: "CREATE", Status: status(createSchema)})
	var schemaPrivs []string
	if !usage {
		schemaPrivs = append(schemaPrivs, "USAGE")
	}
	if !createSchema {
		schemaPrivs = append(schemaPrivs, "CREATE")
	}
	if len(schemaPrivs) > 0 {
		a.stmt(fmt.Sprintf("GRANT %s ON SCHEMA %s TO %s;", strings.Join(schemaPrivs, ", "), Ident(target), Ident(a.role)),
			fmt.Sprintf("lets %s create tables and views in the target schema %s; run as the schema's owner or a superuser",
				Display(a.role), Display(target)))
	}
	return nil
}

// source checks a source schema: USAGE, SELECT on its relations, and
// default privileges for tables created later.
func (a *auditor) source(ctx context.Context, schema string) error {
	var (
		oid    uint32
		owner  string
		usage  bool
		exists = true
	)
	err := a.conn.QueryRow(ctx, `SELECT n.oid, pg_get_userbyid(n.nspowner)::text, has_schema_privilege($1::name, n.oid, 'USAGE')
		FROM pg_namespace n WHERE n.nspname = $2`, a.role, schema).Scan(&oid, &owner, &usage)
	if errors.Is(err, pgx.ErrNoRows) {
		exists = false
	} else if err != nil {
		return fmt.Errorf("grants audit: schema %q: %w", schema, err)
	}
	if !exists {
		a.add(Check{ObjectType: ObjectSchema, Schema: schema, Name: schema, Privilege: "USAGE", Status: NotFound,
			Note: "no schema of this name exists in the database (names are case-sensitive)"})
		a.stmt(fmt.Sprintf("-- schema %s does not exist in database %s: check the name", Ident(schema), Ident(a.res.Database)), "")
		return nil
	}
	a.add(Check{ObjectType: ObjectSchema, Schema: schema, Name: schema, Privilege: "USAGE", Status: status(usage)})
	if !usage {
		a.stmt(fmt.Sprintf("GRANT USAGE ON SCHEMA %s TO %s;", Ident(schema), Ident(a.role)),
			fmt.Sprintf("lets %s look up objects in the source schema %s; run as the schema's owner or a superuser",
				Display(a.role), Display(schema)))
	}

	// A partition is read through a partitioned table it belongs to: the
	// server checks SELECT on the table queried, not on its partitions.
	rows, err := a.conn.Query(ctx, `SELECT c.relname::text, c.relkind::text, has_table_privilege($1::name, c.oid, 'SELECT'),
			pg_get_userbyid(c.relowner)::text, COALESCE(via.nspname, ''), COALESCE(via.relname, '')
		FROM pg_class c
		LEFT JOIN LATERAL (
			WITH RECURSIVE up(oid, depth) AS (
				SELECT i.inhparent, 1 FROM pg_inherits i WHERE i.inhrelid = c.oid
				UNION ALL
				SELECT i.inhparent, up.depth + 1 FROM pg_inherits i JOIN up ON i.inhrelid = up.oid)
			SELECT n.nspname::text, p.relname::text FROM up
			JOIN pg_class p ON p.oid = up.oid JOIN pg_namespace n ON n.oid = p.relnamespace
			WHERE has_table_privilege($1::name, up.oid, 'SELECT')
			ORDER BY up.depth LIMIT 1) via ON c.relispartition
		WHERE c.relnamespace = $2 AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
		ORDER BY c.relname`, a.role, oid)
	if err != nil {
		return fmt.Errorf("grants audit: relations of schema %q: %w", schema, err)
	}
	type rel struct {
		name, kind, owner string
		selectable        bool
		// viaSchema and viaName name the nearest partitioned table the
		// role can read that a partition belongs to; empty if none.
		viaSchema, viaName string
	}
	rels, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (rel, error) {
		var r rel
		err := row.Scan(&r.name, &r.kind, &r.selectable, &r.owner, &r.viaSchema, &r.viaName)
		return r, err
	})
	if err != nil {
		return fmt.Errorf("grants audit: relations of schema %q: %w", schema, err)
	}
	creators := []string{owner}
	missingSelect := 0
	for _, r := range rels {
		c := Check{ObjectType: objectType(r.kind), Schema: schema, Name: r.name, Privilege: "SELECT", Status: status(r.selectable)}
		if !r.selectable && r.viaName != "" {
			c.Status = NotNeeded
			c.Note = fmt.Sprintf("a partition, read through the partitioned table %s", Display(r.viaSchema, r.viaName))
		}
		a.add(c)
		if c.Status == Missing {
			missingSelect++
		}
		if !slices.Contains(creators, r.owner) {
			creators = append(creators, r.owner)
		}
	}
	if missingSelect > 0 {
		a.stmt(fmt.Sprintf("GRANT SELECT ON ALL TABLES IN SCHEMA %s TO %s;", Ident(schema), Ident(a.role)),
			fmt.Sprintf("lets %s read the %d table(s) and view(s) of %s it cannot read now (ALL TABLES includes views, "+
				"materialized views and foreign tables); run as their owner or a superuser", Display(a.role), missingSelect, Display(schema)))
	}
	slices.Sort(creators)
	for _, creator := range creators {
		if err := a.defaults(ctx, schema, oid, creator); err != nil {
			return err
		}
	}
	return nil
}

// defaults checks that tables creator creates later in schema are readable.
func (a *auditor) defaults(ctx context.Context, schema string, oid uint32, creator string) error {
	var inherits, granted bool
	err := a.conn.QueryRow(ctx, `SELECT pg_has_role($1::name, r.oid, 'USAGE'),
			EXISTS (SELECT 1 FROM pg_default_acl d, aclexplode(d.defaclacl) acl
				WHERE d.defaclrole = r.oid AND d.defaclobjtype = 'r'
				AND d.defaclnamespace IN ($3, 0)
				AND acl.privilege_type = 'SELECT'
				AND CASE WHEN acl.grantee = 0 THEN true ELSE pg_has_role($1::name, acl.grantee, 'USAGE') END)
		FROM pg_roles r WHERE r.rolname = $2`, a.role, creator, oid).Scan(&inherits, &granted)
	if err != nil {
		return fmt.Errorf("grants audit: default privileges of %q in schema %q: %w", creator, schema, err)
	}
	c := Check{ObjectType: ObjectDefaultPrivileges, Schema: schema, Name: creator, Privilege: "SELECT"}
	switch {
	case a.res.Superuser:
		c.Status, c.Note = Granted, "superusers read every table"
	case inherits:
		c.Status, c.Note = Granted, fmt.Sprintf("%s has the privileges of %s", Display(a.role), Display(creator))
	case granted:
		c.Status, c.Note = Granted, "by ALTER DEFAULT PRIVILEGES"
	default:
		c.Status = Missing
		c.Note = fmt.Sprintf("tables %s creates in %s later will not be readable", Display(creator), Display(schema))
		a.stmt(fmt.Sprintf("ALTER DEFAULT PRIVILEGES FOR ROLE %s IN SCHEMA %s GRANT SELECT ON TABLES TO %s;",
			Ident(creator), Ident(schema), Ident(a.role)),
			fmt.Sprintf("lets %s read the tables and views %s creates in %s from now on; run as %s, a member of it, or a superuser",
				Display(a.role), Display(creator), Display(schema), Display(creator)))
	}
	a.add(c)
	return nil
}

// dedupe drops empty and repeated names, keeping the order.
func dedupe(names []string) []string {
	var out []string
	for _, n := range names {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
