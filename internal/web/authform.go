package web

import (
	"maps"
	"strings"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// The form's fields of the credential source (auth) and the pooler. Their
// keys are the validation error fields ("auth.program"), so problems land
// next to them. The secrets (auth.client_secret,
// auth.service_account_key) are never echoed back.
var authFields = []string{"auth.kind", "auth.program", "auth.args", "auth.timeout", "auth.workspace_url", "auth.client_id",
	"auth.client_secret", "auth.instance", "auth.endpoint", "auth.service_account_key", "auth.scope", "auth.lifetime", "pooler"}

// authFieldLabel is the label of an auth field, or "".
func authFieldLabel(key string) string {
	switch key {
	case "auth.kind":
		return "Password source"
	case "auth.program":
		return "Program"
	case "auth.args":
		return "Arguments"
	case "auth.timeout":
		return "Timeout"
	case "auth.lifetime":
		return "Token lifetime"
	case "auth.workspace_url":
		return "Workspace URL"
	case "auth.client_id":
		return "Client ID"
	case "auth.client_secret":
		return "Client secret"
	case "auth.instance":
		return "Instance"
	case "auth.endpoint":
		return "Endpoint"
	case "auth.service_account_key", "auth.service_account":
		return "Service-account key"
	case "auth.scope":
		return "OAuth scope"
	case "pooler":
		return "Connection pooler"
	}
	return ""
}

// authSecretsStored says which secrets the saved connection has (edit).
type authSecretsStored struct {
	ClientSecret, ServiceAccountKey bool
}

// authValues are the form values of a saved connection's auth.
func authValues(v *app.ConnectionView) map[string]string {
	out := map[string]string{"auth.kind": string(connection.AuthPassword), "pooler": string(v.Pooler)}
	a := v.Auth
	if a == nil {
		return out
	}
	maps.Copy(out, map[string]string{"auth.kind": string(a.Kind), "auth.program": a.Program, "auth.args": strings.Join(a.Args, "\n"),
		"auth.workspace_url": a.WorkspaceURL, "auth.client_id": a.ClientID, "auth.instance": a.Instance,
		"auth.endpoint": a.Endpoint, "auth.scope": a.Scope})
	if a.Timeout != 0 {
		out["auth.timeout"] = a.Timeout.String()
	}
	if a.Lifetime != 0 {
		out["auth.lifetime"] = a.Lifetime.String()
	}
	return out
}

// parseAuth reads the auth fields of the kind chosen (the other kinds'
// fields may have been hidden with text in them) and the pooler into
// spec. The secrets come from the request, never from Values.
func (f *connForm) parseAuth(spec *connection.Spec, clientSecret, key string) {
	v := f.Values
	if p := connection.Pooler(v["pooler"]); p != connection.PoolerNone {
		spec.Pooler = p
	}
	kind := connection.AuthKind(v["auth.kind"])
	if kind == "" || kind == connection.AuthPassword {
		return
	}
	a := &connection.Auth{Kind: kind}
	switch kind {
	case connection.AuthCommand:
		a.Program = v["auth.program"]
		for line := range strings.Lines(v["auth.args"]) {
			if line = strings.TrimRight(line, "\r\n"); line != "" {
				a.Args = append(a.Args, line)
			}
		}
		a.Timeout = f.duration("auth.timeout")
		a.Lifetime = f.duration("auth.lifetime")
	case connection.AuthLakebase:
		a.WorkspaceURL, a.ClientID = v["auth.workspace_url"], v["auth.client_id"]
		a.Instance, a.Endpoint = v["auth.instance"], v["auth.endpoint"]
		a.ClientSecret = secret.New(strings.TrimSpace(clientSecret))
		if a.Endpoint != "" {
			a.Lifetime = f.duration("auth.lifetime")
		}
	case connection.AuthAlloyDBIAM:
		a.Scope = v["auth.scope"]
		a.ServiceAccountKey = secret.New(strings.TrimSpace(key))
	}
	spec.Auth = a
}

// AuthKinds fill the source select.
func (f *connForm) AuthKinds() []connection.AuthKind { return connection.AuthKinds() }

// Poolers fill the pooler select.
func (f *connForm) Poolers() []connection.Pooler { return connection.Poolers() }
