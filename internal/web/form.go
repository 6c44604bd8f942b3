package web

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// Form field names are the field keys of fielderr.Error
// ("host", "ssh_tunnel.port"), so that every problem lands next to its
// input. Besides them the form has these fields.
const (
	fieldTunnel        = "ssh_tunnel.enabled"
	fieldClearPassword = "clear_password"
)

// fieldOrder is the order of the fields on the form, for the error summary.
func fieldOrder() []string {
	return []string{"name", "flavor", "host", "port", "database", "user", "password", "auth.kind", "auth.program", "auth.args",
		"auth.timeout", "auth.workspace_url", "auth.client_id", "auth.client_secret", "auth.instance", "auth.endpoint",
		"auth.service_account_key", "auth.service_account", "auth.scope", "auth.lifetime", "sslmode", "ssl_root_cert",
		"require_auth", "pooler", "schema", "role", "threads", "health_check_interval", "ssh_tunnel.host", "ssh_tunnel.port", "ssh_tunnel.user", "ssh_tunnel.key_type",
		"ssh_tunnel.keepalive_interval", "ssh_tunnel.keepalive_count_max", "ssh_tunnel.known_host",
		"ssh_tunnel.auth", "ssh_tunnel.proxy_command", "ssh_tunnel.host_authorities"}
}

// fieldLabel is the label of a field as the form shows it.
func fieldLabel(key string) string {
	switch key {
	case "name":
		return "Connection name"
	case "flavor":
		return "Database type"
	case "host":
		return "Host"
	case "port":
		return "Port"
	case "database":
		return "Database"
	case "user":
		return "Username"
	case "password":
		return "Password"
	case "sslmode":
		return "SSL mode"
	case "ssl_root_cert":
		return "CA certificate"
	case "require_auth":
		return "Accepted authentication"
	case "schema":
		return "Schema"
	case "role":
		return "Role"
	case "threads":
		return "Threads"
	case "health_check_interval":
		return "Scheduled test every"
	case "ssh_tunnel.host":
		return "Bastion host"
	case "ssh_tunnel.port":
		return "Bastion port"
	case "ssh_tunnel.user":
		return "Bastion user"
	case "ssh_tunnel.key_type":
		return "Key type"
	case "ssh_tunnel.keepalive_interval":
		return "Keepalive interval"
	case "ssh_tunnel.keepalive_count_max":
		return "Missed keepalives allowed"
	case "ssh_tunnel.known_host":
		return "Bastion host key"
	case "ssh_tunnel.auth":
		return "Login method"
	case "ssh_tunnel.proxy_command":
		return "Proxy command"
	case "ssh_tunnel.host_authorities":
		return "Host authorities"
	case "form":
		return "Form"
	}
	if l := authFieldLabel(key); l != "" {
		return l
	}
	if l, ok := hopLabel(key); ok {
		return l
	}
	return key
}

// fieldID is the HTML id of a field's input.
func fieldID(key string) string { return "f-" + strings.ReplaceAll(key, ".", "-") }

// connForm is the create/edit form: what was typed (never the password)
// and the problems found.
type connForm struct {
	// Edit is true on the edit form of connection Name.
	Edit bool
	Name string
	// Values holds the typed values by field key.
	Values map[string]string
	// Tunnel is whether "Use SSH Tunnel" is on.
	Tunnel bool
	// HasPassword is whether the connection has a stored password (edit).
	HasPassword   bool
	ClearPassword bool
	// PinnedHostKey is the fingerprint of the bastion host key pinned for
	// the saved connection (edit), or "".
	PinnedHostKey string
	// Errors holds the problems by field key.
	Errors map[string]string
	// Problems lists the problems in form order, for the summary.
	Problems []problem
	// Test is the report of a test of the form run without the script, or
	// nil.
	Test *testView
	// Flavors and SSLModes fill the selects.
	Flavors  []connection.Flavor
	SSLModes []connection.SSLMode
	// Stored says which credential secrets the saved connection has
	// (edit).
	Stored authSecretsStored
	// ExtraHops is how many SSH hops follow the bastion (hops.go).
	ExtraHops int
	// HopsChanged says that a hop button changed the form: nothing was
	// saved yet.
	HopsChanged bool
}

// problem is one line of the error summary.
type problem struct {
	ID, Label, Message string
}

// fieldView is what the template needs to render one input.
type fieldView struct {
	Key, Name, ID, Value, Error, ErrorID, HintID string
}

func (f *connForm) field(key string) fieldView {
	id := fieldID(key)
	return fieldView{Key: key, Name: key, ID: id, Value: f.Values[key], Error: f.Errors[key],
		ErrorID: id + "-error", HintID: id + "-hint"}
}

// Flavor is the selected flavor (for the placeholders).
func (f *connForm) Flavor() connection.Flavor {
	return connection.Flavor(f.Values["flavor"])
}

// DatabasePlaceholder is an example database name for the flavor.
func (f *connForm) DatabasePlaceholder() string { return databasePlaceholder(f.Flavor()) }

// HostPlaceholder is an example host for the flavor.
func (f *connForm) HostPlaceholder() string { return hostPlaceholder(f.Flavor()) }

// AdvancedOpen reports whether the advanced tunnel settings should start
// open: when they differ from the defaults or have a problem.
func (f *connForm) AdvancedOpen() bool {
	for _, k := range []string{"ssh_tunnel.key_type", "ssh_tunnel.keepalive_interval", "ssh_tunnel.keepalive_count_max"} {
		if f.Errors[k] != "" {
			return true
		}
	}
	return f.Values["ssh_tunnel.key_type"] != connection.DefaultKeyType ||
		f.Values["ssh_tunnel.keepalive_interval"] != connection.DefaultKeepaliveInterval.String() ||
		f.Values["ssh_tunnel.keepalive_count_max"] != strconv.Itoa(connection.DefaultKeepaliveCountMax)
}

// SSLChosen reports whether the SSL mode differs from the flavor's default,
// so that changing the flavor in the browser leaves it alone.
func (f *connForm) SSLChosen() bool {
	return f.Values["sslmode"] != string(f.Flavor().DefaultSSLMode())
}

func databasePlaceholder(fl connection.Flavor) string {
	if fl == connection.Lakebase {
		return "databricks_postgres"
	}
	return "analytics"
}

func hostPlaceholder(fl connection.Flavor) string {
	switch fl {
	case connection.AlloyDB:
		return "10.20.0.5"
	case connection.Lakebase:
		return "instance-1234.database.cloud.databricks.com"
	}
	return "db.internal.example.com"
}

func newConnForm() *connForm {
	return &connForm{Values: map[string]string{}, Errors: map[string]string{},
		Flavors: connection.Flavors(), SSLModes: connection.SSLModes()}
}

// blankForm is the form for a new connection, with the defaults filled in.
func blankForm() *connForm {
	f := newConnForm()
	maps.Copy(f.Values, map[string]string{
		"flavor":                         string(connection.Postgres),
		"port":                           strconv.Itoa(connection.DefaultPort),
		"sslmode":                        string(connection.Postgres.DefaultSSLMode()),
		"threads":                        strconv.Itoa(connection.DefaultThreads),
		"ssh_tunnel.port":                strconv.Itoa(connection.DefaultSSHPort),
		"ssh_tunnel.key_type":            connection.DefaultKeyType,
		"ssh_tunnel.keepalive_interval":  connection.DefaultKeepaliveInterval.String(),
		"ssh_tunnel.keepalive_count_max": strconv.Itoa(connection.DefaultKeepaliveCountMax),
		"auth.kind":                      string(connection.AuthPassword),
		"pooler":                         string(connection.PoolerNone),
	})
	return f
}

// formFromView is the edit form of a saved connection.
func formFromView(v *app.ConnectionView) *connForm {
	f := blankForm()
	f.Edit, f.Name, f.HasPassword = true, v.Name, v.HasPassword
	if v.SSHTunnel != nil {
		f.PinnedHostKey = v.SSHTunnel.HostKeyFingerprint
	}
	s := v.Spec()
	maps.Copy(f.Values, map[string]string{
		"name": s.Name, "flavor": string(s.Flavor), "host": s.Host, "port": strconv.Itoa(s.Port),
		"database": s.Database, "user": s.User, "sslmode": string(s.SSLMode), "ssl_root_cert": s.SSLRootCert,
		"require_auth": s.RequireAuth, "schema": s.Schema, "role": s.Role, "threads": strconv.Itoa(s.Threads),
	})
	maps.Copy(f.Values, authValues(v))
	if a := v.Auth; a != nil {
		f.Stored = authSecretsStored{ClientSecret: a.HasClientSecret, ServiceAccountKey: a.HasServiceAccountKey}
	}
	if s.HealthCheckInterval != 0 {
		f.Values["health_check_interval"] = s.HealthCheckInterval.String()
	}
	if t := s.Tunnel; t != nil {
		f.Tunnel = true
		maps.Copy(f.Values, map[string]string{
			"ssh_tunnel.host": t.Host, "ssh_tunnel.port": strconv.Itoa(t.Port), "ssh_tunnel.user": t.User,
			"ssh_tunnel.key_type": t.KeyType, "ssh_tunnel.keepalive_interval": t.KeepaliveInterval.String(),
			"ssh_tunnel.keepalive_count_max": strconv.Itoa(t.KeepaliveCountMax),
		})
		f.fillHops(v)
	}
	return f
}

// parsedForm is a posted form turned into a spec.
type parsedForm struct {
	form *connForm
	spec connection.Spec
	// password is nil to keep the stored password (edit with the field
	// left empty), else the new one (empty to remove it).
	password *secret.Value
}

// parseConnForm reads a posted form. Problems that stop a field from being
// read (a port that is not a number) are recorded on the form; the rest is
// left to validation.
func parseConnForm(r *http.Request, edit bool, name string) (*parsedForm, error) {
	if err := r.ParseForm(); err != nil {
		return nil, fmt.Errorf("read form: %w", err)
	}
	f := newConnForm()
	f.Edit, f.Name = edit, name
	for _, k := range fieldOrder() {
		if k == "password" || k == "auth.client_secret" || k == "auth.service_account_key" {
			continue // never echoed back
		}
		v := r.PostFormValue(k)
		if k != "ssl_root_cert" && k != "ssh_tunnel.known_host" && k != "auth.args" {
			v = strings.TrimSpace(v)
		}
		f.Values[k] = v
	}
	f.readHops(r)
	if edit {
		f.Values["name"] = name
	}
	f.Tunnel = r.PostFormValue(fieldTunnel) != ""
	f.ClearPassword = r.PostFormValue(fieldClearPassword) != ""
	v := f.Values
	spec := connection.Spec{
		Name:     v["name"],
		Flavor:   connection.Flavor(v["flavor"]),
		Host:     v["host"],
		Database: v["database"],
		User:     v["user"],
		SSLMode:  connection.SSLMode(v["sslmode"]),
		Schema:   v["schema"],
		Role:     v["role"],
		// require_auth is a list such as "!password,!md5".
		RequireAuth: v["require_auth"],
	}
	spec.Port = f.number("port", 1, 65535)
	spec.Threads = f.number("threads", 1, connection.MaxThreads)
	spec.HealthCheckInterval = f.duration("health_check_interval")
	// The CA certificate applies only to the verifying modes; the field may
	// have been hidden with text in it when another mode was chosen.
	if spec.SSLMode.Verifies() {
		spec.SSLRootCert = strings.TrimSpace(v["ssl_root_cert"])
	}
	if f.Tunnel {
		t := &connection.Tunnel{Host: v["ssh_tunnel.host"], User: v["ssh_tunnel.user"], KeyType: v["ssh_tunnel.key_type"],
			KnownHost: strings.TrimSpace(v["ssh_tunnel.known_host"])}
		t.Port = f.number("ssh_tunnel.port", 1, 65535)
		t.KeepaliveCountMax = f.number("ssh_tunnel.keepalive_count_max", 1, connection.MaxKeepaliveMax)
		t.KeepaliveInterval = f.duration("ssh_tunnel.keepalive_interval")
		f.applyHops(t)
		spec.Tunnel = t
	}
	f.parseAuth(&spec, r.PostFormValue("auth.client_secret"), r.PostFormValue("auth.service_account_key"))
	pf := &parsedForm{form: f}
	if spec.AuthKind().IsToken() {
		// The token is the password: the password field (hidden) is not
		// read.
		pf.spec = spec
		return pf, nil
	}
	if pw := r.PostFormValue("password"); pw != "" {
		spec.Password = secret.New(pw)
		pf.password = &spec.Password
	} else if edit && f.ClearPassword {
		pf.password = &secret.Value{}
	}
	pf.spec = spec
	return pf, nil
}

// number reads an integer field; "" is 0 (the default). A value that is
// not a number, or 0 typed where lo is above it, is recorded as a problem.
func (f *connForm) number(key string, lo, hi int) int {
	s := f.Values[key]
	if s == "" {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		f.Errors[key] = fmt.Sprintf("%q is not a whole number: accepted is %d to %d", s, lo, hi)
		return 0
	}
	if n == 0 && lo > 0 {
		// 0 is the spec's "unset": passed on, it would become the default
		// without a word.
		f.Errors[key] = fmt.Sprintf("0 is out of range: accepted is %d to %d, or leave it empty for the default", lo, hi)
	}
	return n
}

// duration reads a duration field: "30s", "1m", or a number of seconds.
func (f *connForm) duration(key string) connection.Duration {
	s := f.Values[key]
	if s == "" {
		return 0
	}
	if n, err := strconv.ParseFloat(s, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		d, err := connection.FromSeconds(n)
		if err != nil {
			f.Errors[key] = fmt.Sprintf("%q is not a duration: accepted is a number of seconds up to %d, or a number with a unit, such as 30s or 1m", s, connection.MaxSeconds)
		}
		return d
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		f.Errors[key] = fmt.Sprintf("%q is not a duration: write a number with a unit, such as 30s or 1m", s)
		return 0
	}
	return connection.Duration(d)
}

// addProblems records validation problems (keeping problems already found
// while reading the form) and builds the summary in form order.
func (f *connForm) addProblems(fields map[string]string) {
	for k, p := range fields {
		if _, ok := f.Errors[k]; !ok {
			f.Errors[k] = p
		}
	}
	f.summarize()
}

func (f *connForm) summarize() {
	f.Problems = f.Problems[:0]
	order := fieldOrder()
	keys := slices.Collect(maps.Keys(f.Errors))
	slices.SortFunc(keys, func(a, b string) int {
		ia, ib := slices.Index(order, a), slices.Index(order, b)
		if ia < 0 {
			ia = len(order)
		}
		if ib < 0 {
			ib = len(order)
		}
		if ia != ib {
			return ia - ib
		}
		return strings.Compare(a, b)
	})
	for _, k := range keys {
		id := ""
		if slices.Contains(order, k) || strings.HasPrefix(k, "ssh_hops.") {
			id = fieldID(k)
		}
		f.Problems = append(f.Problems, problem{ID: id, Label: fieldLabel(k), Message: f.Errors[k]})
	}
}

// validate checks the spec as the use case will, so that a form with
// unreadable fields still shows every other problem at once.
func (pf *parsedForm) validate() {
	spec := pf.spec.Clone()
	spec.Host = strings.TrimSpace(spec.Host)
	spec.ApplyDefaults()
	if err := spec.Validate(); err != nil {
		if ve, ok := err.(*fielderr.Error); ok {
			fields := ve.Fields()
			if pf.form.Edit {
				delete(fields, "name")
			}
			pf.form.addProblems(fields)
			return
		}
	}
	pf.form.summarize()
}
