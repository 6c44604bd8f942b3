package api_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
)

// TestOpenAPIDocument checks that the OpenAPI document is valid JSON of
// OpenAPI 3, lists exactly the routes of Routes() with the action each
// requires, resolves every $ref, declares every path parameter, and is
// served without credentials.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	var doc struct {
		OpenAPI    string                                `json:"openapi"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components map[string]map[string]json.RawMessage `json:"components"`
		Security   []map[string][]string                 `json:"security"`
	}
	raw := api.OpenAPI()
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	for _, scheme := range []string{"bearerAuth", "sessionCookie", "csrfToken"} {
		if doc.Components["securitySchemes"][scheme] == nil {
			t.Errorf("security scheme %s is missing", scheme)
		}
	}
	for _, schema := range []string{"Error", "ErrorBody", "Connection", "ConnectionInput", "QueryResponse"} {
		if doc.Components["schemas"][schema] == nil {
			t.Errorf("schema %s is missing", schema)
		}
	}

	type operation struct {
		Action     string                `json:"x-pgrelay-action"`
		Public     bool                  `json:"x-pgrelay-public"`
		Security   []map[string][]string `json:"security"`
		Parameters []json.RawMessage     `json:"parameters"`
		Responses  map[string]any        `json:"responses"`
	}
	documented := map[string]operation{}
	pathParams := map[string][]json.RawMessage{}
	for path, item := range doc.Paths {
		for method, v := range item {
			if method == "parameters" {
				var ps []json.RawMessage
				if err := json.Unmarshal(v, &ps); err != nil {
					t.Fatalf("%s parameters: %v", path, err)
				}
				pathParams[path] = ps
				continue
			}
			var op operation
			if err := json.Unmarshal(v, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			documented[strings.ToUpper(method)+" "+path] = op
		}
	}
	served := map[string]bool{}
	for _, rt := range srv.API.Routes() {
		key := rt.Method + " " + rt.Pattern
		served[key] = true
		op, ok := documented[key]
		switch {
		case !ok:
			t.Errorf("route %s is not in openapi.json", key)
			continue
		case rt.Public:
			if !op.Public || op.Security == nil || len(op.Security) != 0 {
				t.Errorf("%s is public: document it with \"security\": [] and x-pgrelay-public", key)
			}
			continue
		case op.Action != string(rt.Action):
			t.Errorf("%s: x-pgrelay-action %q, the route requires %q", key, op.Action, rt.Action)
		}
		for _, code := range []string{"401", "403", "500"} {
			if op.Responses[code] == nil {
				t.Errorf("%s does not document response %s", key, code)
			}
		}
		if rt.Method != http.MethodGet {
			var csrf bool
			for _, req := range op.Security {
				_, cookie := req["sessionCookie"]
				_, token := req["csrfToken"]
				csrf = csrf || cookie && token
				if cookie && !token {
					t.Errorf("%s accepts the session cookie without CSRF token in its security", key)
				}
			}
			if !csrf {
				t.Errorf("%s: security must require csrfToken with sessionCookie", key)
			}
		}
		// Every path parameter is declared.
		var declared []string
		for _, p := range append(slices.Clone(pathParams[rt.Pattern]), op.Parameters...) {
			declared = append(declared, paramName(t, p, doc.Components["parameters"]))
		}
		for _, m := range regexp.MustCompile(`\{(\w+)\}`).FindAllStringSubmatch(rt.Pattern, -1) {
			if !slices.Contains(declared, m[1]) {
				t.Errorf("%s: path parameter %s is not declared", key, m[1])
			}
		}
	}
	for key := range documented {
		if !served[key] {
			t.Errorf("openapi.json documents %s, which is not a route", key)
		}
	}

	// Every $ref resolves.
	var whole any
	_ = json.Unmarshal(raw, &whole)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				parts := strings.Split(strings.TrimPrefix(ref, "#/"), "/")
				if len(parts) != 3 || parts[0] != "components" || doc.Components[parts[1]][parts[2]] == nil {
					t.Errorf("$ref %s does not resolve", ref)
				}
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(whole)

	// Served without credentials, as is.
	r := do(t, "GET", srv.URL+"/api/v1/openapi.json", "", "", "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") || r.body != string(raw) {
		t.Fatalf("GET /api/v1/openapi.json: %d %s", r.status, r.header.Get("Content-Type"))
	}
	if doc, err := srv.Client(t, srv.AdminToken).OpenAPI(bg); err != nil || string(doc) != string(raw) {
		t.Fatalf("client OpenAPI: %v", err)
	}
}

func paramName(t *testing.T, raw json.RawMessage, components map[string]json.RawMessage) string {
	t.Helper()
	var p struct {
		Ref  string `json:"$ref"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	if p.Ref != "" {
		target := components[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
		if target == nil {
			t.Fatalf("parameter %s does not resolve", p.Ref)
		}
		return paramName(t, target, components)
	}
	return p.Name
}
