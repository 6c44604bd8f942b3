package web

import (
	"encoding/json"
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
	maps.Copy(out, map[string]string{"auth.kind": string(a.Kind), "auth.program": a.Program, "auth.args": argsText(a.Args),
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

// argsText shows a command's arguments as the form reads them back: one
// per line, or a JSON array when lines cannot hold them (an empty
// argument, one with a line break, or a first one that starts with "[").
func argsText(args []string) string {
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, "\r\n") || (i == 0 && strings.HasPrefix(strings.TrimSpace(a), "[")) {
			b, _ := json.Marshal(args)
			return string(b)
		}
	}
	return strings.Join(args, "\n")
}

// parseArgsText reads the arguments field: a JSON array of strings, or one
// argument per line (empty lines left out).
func parseArgsText(text string) []string {
	if t := strings.TrimSpace(text); strings.HasPrefix(t, "[") {
		var args []string
		if err := json.Unmarshal([]byte(t), &args); err == nil {
			return args
		}
	}
	var args []string
	for line := range strings.Lines(text) {
		if line = strings.TrimRight(line, "\r\n"); line != "" {
			args = append(args, line)
		}
	}
	return args
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
		a.Args = parseArgsText(v["auth.args"])
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
