package api_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// openAPIDoc is the OpenAPI document, decoded once.
var openAPIDoc = sync.OnceValue(func() map[string]any {
	var doc map[string]any
	if err := json.Unmarshal(api.OpenAPI(), &doc); err != nil {
		panic(err)
	}
	return doc
})

// schemaChecker checks JSON values against the OpenAPI document's schemas
// (the keywords the document uses). Strictly: an object's property that
// its schema does not declare is a problem too, since an integrator's
// generated client would not know it.
type schemaChecker struct {
	doc map[string]any
	// loose skips enum, format and pattern (for values made up by fill).
	loose bool
}

func (c schemaChecker) resolve(s map[string]any) map[string]any {
	for {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		var cur any = c.doc
		for _, p := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = cur.(map[string]any)[p]
		}
		s = cur.(map[string]any)
	}
}

// properties collects the declared properties of s and its allOf parts.
func (c schemaChecker) properties(s map[string]any, into map[string]bool) {
	s = c.resolve(s)
	for k := range mapOf(s["properties"]) {
		into[k] = true
	}
	for _, sub := range listOf(s["allOf"]) {
		c.properties(sub.(map[string]any), into)
	}
}

func mapOf(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func listOf(v any) []any {
	l, _ := v.([]any)
	return l
}

// check returns the problems of v (decoded JSON, numbers as json.Number)
// against schema s, each prefixed with its path.
func (c schemaChecker) check(path string, s map[string]any, v any) []string {
	return c.checkStrict(path, s, v, true)
}

func (c schemaChecker) checkStrict(path string, s map[string]any, v any, strict bool) []string {
	s = c.resolve(s)
	var probs []string
	bad := func(format string, args ...any) {
		probs = append(probs, path+": "+fmt.Sprintf(format, args...))
	}
	if v == nil {
		if s["nullable"] == true || (s["type"] == nil && s["allOf"] == nil && s["oneOf"] == nil) {
			return nil
		}
		// allOf parts may be nullable themselves.
		bad("null, but the schema is not nullable")
		return probs
	}
	for _, sub := range listOf(s["allOf"]) {
		probs = append(probs, c.checkStrict(path, sub.(map[string]any), v, false)...)
	}
	if one := listOf(s["oneOf"]); one != nil {
		n := 0
		for _, sub := range one {
			if len(c.checkStrict(path, sub.(map[string]any), v, strict)) == 0 {
				n++
			}
		}
		if n != 1 {
			bad("matches %d of the oneOf schemas, want 1", n)
		}
	}
	if enum := listOf(s["enum"]); enum != nil && !c.loose {
		if !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
			bad("%v is not one of %v", v, enum)
		}
	}
	switch t, _ := s["type"].(string); t {
	case "object":
		o, ok := v.(map[string]any)
		if !ok {
			bad("want an object, got %T", v)
			return probs
		}
		for _, r := range listOf(s["required"]) {
			if _, ok := o[r.(string)]; !ok {
				bad("required property %q is missing", r)
			}
		}
		props := mapOf(s["properties"])
		declared := map[string]bool{}
		c.properties(s, declared)
		keys := make([]string, 0, len(o))
		for k := range o {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if ps, ok := props[k].(map[string]any); ok {
				probs = append(probs, c.checkStrict(path+"."+k, ps, o[k], true)...)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case map[string]any:
				probs = append(probs, c.checkStrict(path+"."+k, ap, o[k], true)...)
			case bool:
				if !ap {
					bad("property %q is not allowed", k)
				}
			default:
				if strict && len(declared) > 0 && !declared[k] {
					bad("property %q is not in the schema", k)
				}
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			bad("want an array, got %T", v)
			return probs
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range a {
				probs = append(probs, c.checkStrict(path+"["+strconv.Itoa(i)+"]", items, e, true)...)
			}
		}
		if m, ok := s["minItems"].(float64); ok && len(a) < int(m) {
			bad("%d items, minItems %v", len(a), m)
		}
		if m, ok := s["maxItems"].(float64); ok && len(a) > int(m) {
			bad("%d items, maxItems %v", len(a), m)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			bad("want a string, got %T %v", v, v)
			return probs
		}
		if f, _ := s["format"].(string); f == "date-time" && !c.loose {
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				bad("%q is not a date-time", str)
			}
		}
		if p, ok := s["pattern"].(string); ok && !c.loose && !regexp.MustCompile(p).MatchString(str) {
			bad("%q does not match %s", str, p)
		}
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			bad("want a %s, got %T %v", t, v, v)
			return probs
		}
		if t == "integer" {
			if _, err := n.Int64(); err != nil {
				bad("%s is not an integer", n)
			}
		}
		f, _ := n.Float64()
		if m, ok := s["minimum"].(float64); ok && f < m {
			bad("%s < minimum %v", n, m)
		}
		if m, ok := s["maximum"].(float64); ok && f > m {
			bad("%s > maximum %v", n, m)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			bad("want a boolean, got %T %v", v, v)
		}
	}
	return probs
}

// decodeJSONValue decodes JSON with numbers as json.Number.
func decodeJSONValue(b []byte) (any, error) {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// operationFor finds the documented operation of a method and a request
// path (/api/v1/connections/wh) and its path template.
func operationFor(doc map[string]any, method, path string) (map[string]any, string) {
	for tmpl, item := range mapOf(doc["paths"]) {
		re := "^" + regexp.MustCompile(`\\\{\w+\\\}`).ReplaceAllString(regexp.QuoteMeta(tmpl), `[^/]+`) + "$"
		if !regexp.MustCompile(re).MatchString(path) {
			continue
		}
		// A literal path wins over a template (connections/test).
		if op := mapOf(mapOf(item)[strings.ToLower(method)]); op != nil {
			if lit := mapOf(mapOf(doc["paths"])[path]); lit != nil && tmpl != path {
				if lop := mapOf(lit[strings.ToLower(method)]); lop != nil {
					return lop, path
				}
			}
			return op, tmpl
		}
	}
	return nil, ""
}

// contractTransport checks every API response against openapi.json: the
// status is documented for the operation, and a JSON body matches the
// documented schema of that status. Problems are reported on t.
type contractTransport struct {
	t    *testing.T
	next http.RoundTripper
}

func (ct *contractTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := ct.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	ct.checkResponse(req.Method, req.URL.Path, resp, body)
	return resp, nil
}

func (ct *contractTransport) checkResponse(method, path string, resp *http.Response, body []byte) {
	t := ct.t
	t.Helper()
	doc := openAPIDoc()
	sc := schemaChecker{doc: doc}
	if method == http.MethodHead {
		// A GET without its body (net/http serves HEAD with GET routes).
		if resp.StatusCode < 400 && len(body) == 0 {
			if op, _ := operationFor(doc, http.MethodGet, path); op != nil {
				return
			}
		}
		method = http.MethodGet
	}
	if resp.StatusCode == http.StatusMethodNotAllowed {
		ct.checkAllow(what(method, path, resp), path, resp.Header.Get("Allow"))
	}
	op, tmpl := operationFor(doc, method, path)
	status := strconv.Itoa(resp.StatusCode)
	what := what(method, path, resp)
	if op == nil {
		// Unknown routes, wrong methods: an error body all the same.
		if resp.StatusCode < 400 {
			t.Errorf("%s: no documented operation", what)
			return
		}
		ct.checkError(what, body, resp)
		return
	}
	r := mapOf(mapOf(op["responses"])[status])
	if r == nil {
		r = mapOf(mapOf(op["responses"])["default"])
	}
	if r == nil {
		t.Errorf("%s: status %s is not documented for %s %s (body %.300s)", what, status, method, tmpl, body)
		return
	}
	r = sc.resolve(r)
	content := mapOf(r["content"])
	if len(content) == 0 {
		if len(body) > 0 {
			t.Errorf("%s: documented without body, got %.200q", what, body)
		}
		return
	}
	ctype := resp.Header.Get("Content-Type")
	mt := strings.TrimSpace(strings.Split(ctype, ";")[0])
	media := mapOf(content[mt])
	if media == nil {
		keys := make([]string, 0, len(content))
		for k := range content {
			keys = append(keys, k)
		}
		t.Errorf("%s: Content-Type %q is not documented (%v)", what, ctype, keys)
		return
	}
	schema := mapOf(media["schema"])
	if schema == nil || mt != "application/json" {
		return
	}
	v, err := decodeJSONValue(body)
	if err != nil {
		t.Errorf("%s: body is not JSON: %v: %.200q", what, err, body)
		return
	}
	for _, p := range sc.check("body", schema, v) {
		t.Errorf("%s: %s", what, p)
	}
}

func what(method, path string, resp *http.Response) string {
	return fmt.Sprintf("%s %s → %d", method, path, resp.StatusCode)
}

// checkAllow checks that a 405's Allow header lists the methods that
// openapi.json documents for the path, and HEAD with GET.
func (ct *contractTransport) checkAllow(what, path, allow string) {
	var want []string
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
		probe := m
		if m == "HEAD" {
			probe = "GET"
		}
		if op, _ := operationFor(openAPIDoc(), probe, path); op != nil {
			want = append(want, m)
		}
	}
	if got := strings.Join(want, ", "); allow != got {
		ct.t.Errorf("%s: Allow %q, want %q", what, allow, got)
	}
}

// checkError checks an error body of an undocumented route.
func (ct *contractTransport) checkError(what string, body []byte, resp *http.Response) {
	sc := schemaChecker{doc: openAPIDoc()}
	v, err := decodeJSONValue(body)
	if err != nil {
		ct.t.Errorf("%s: error body is not JSON: %v: %.200q", what, err, body)
		return
	}
	for _, p := range sc.check("body", map[string]any{"$ref": "#/components/schemas/Error"}, v) {
		ct.t.Errorf("%s: %s", what, p)
	}
}

// TestWireTypesMatchOpenAPI checks that every body the API sends or reads,
// with every field set, has the fields and JSON types that openapi.json
// documents for it: an integrator's generated client reads what the Go
// client reads.
func TestWireTypesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	sc := schemaChecker{doc: openAPIDoc(), loose: true}
	for schema, v := range map[string]any{
		"Connection":             &apiwire.ConnectionView{},
		"ConnectionList":         &apiwire.ConnectionList{},
		"PublicKey":              &apiwire.PublicKeyResponse{},
		"KeyRotation":            &apiwire.KeyRotation{},
		"KeyRotationState":       &apiwire.KeyRotationView{},
		"TestReport":             &apiwire.TestReport{},
		"QueryResponse":          &apiwire.QueryResponse{},
		"GrantsResponse":         &apiwire.GrantsResponse{},
		"NewToken":               &apiwire.NewToken{},
		"Token":                  &apiwire.TokenView{},
		"TokenList":              &apiwire.TokenList{},
		"WhoAmI":                 &apiwire.WhoAmI{},
		"Job":                    &apiwire.JobView{},
		"JobList":                &apiwire.JobList{},
		"ApplyResponse":          &apiwire.ApplyResponse{},
		"Run":                    &apiwire.Run{},
		"RunList":                &apiwire.RunList{},
		"RunLog":                 &apiwire.RunLog{},
		"Error":                  &apiwire.ErrorResponse{},
		"SSHCA":                  &apiwire.SSHCAView{},
		"HopKeyLines":            &apiwire.HopKeyLines{},
		"AuditList":              &apiwire.AuditList{},
		"AuditRecord":            &apiwire.AuditRecord{},
		"AuditVerification":      &apiwire.AuditVerification{},
		"ConnectionInput":        &apiwire.ConnectionInput{},
		"TestDraftRequest":       &apiwire.TestDraftRequest{},
		"ApplyRequest":           &apiwire.ApplyRequest{},
		"JobInput":               &apiwire.JobInput{},
		"TokenCreateRequest":     &apiwire.TokenCreateRequest{},
		"GrantsRequest":          &apiwire.GrantsRequest{},
		"KeyRotationRequest":     &apiwire.KeyRotationRequest{},
		"QueryRequest":           &apiwire.QueryRequest{},
		"TrustHostKeyRequest":    &apiwire.TrustHostKeyRequest{},
		"SSHCAInitRequest":       &apiwire.SSHCAInitRequest{},
		"SSHCAPrincipalsRequest": &apiwire.SSHCAPrincipalsRequest{},
	} {
		fill(reflect.ValueOf(v), 0)
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := decodeJSONValue(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range sc.check(schema, map[string]any{"$ref": "#/components/schemas/" + schema}, doc) {
			t.Errorf("%T: %s", v, p)
		}
	}
}

// contractCall is one request of TestResponsesMatchOpenAPI.
type contractCall struct {
	method, path string
	ctype, body  string
	want         int
}

// TestResponsesMatchOpenAPI drives every operation of openapi.json
// against a real server, with valid and invalid input, and checks each
// response against the document: the status is documented for the
// operation and the body matches its schema (no undocumented field).
func TestResponsesMatchOpenAPI(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	srv := apitest.Start(t, apitest.Options{Queue: true, AllowCommands: []string{"sh"}})
	ct := &contractTransport{t: t, next: http.DefaultTransport}
	hc := &http.Client{Transport: ct}
	viewer := srv.Token(t, "viewer", auth.Viewer)
	send := func(c contractCall, token string) response {
		t.Helper()
		req, err := http.NewRequestWithContext(bg, c.method, srv.URL+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
	}
	js := "application/json"
	conn := fmt.Sprintf(`{"name": "db", "host": %q, "port": %d, "database": %q, "user": %q, "password": %q, "sslmode": "disable"}`,
		pg.Host, pg.Port, db.Name, db.User, db.Password)
	tun := `{"name": "tun", "host": "db.internal", "database": "d", "user": "u",
		"ssh_tunnel": {"host": "127.0.0.1", "port": 1, "user": "u"},
		"ssh_hops": [{"host": "127.0.0.1", "port": 1, "user": "u"}, {"host": "127.0.0.2", "port": 1, "user": "v", "own_key": true}]}`
	job := `{"name": "j", "connection": "db", "steps": [{"sql": "select 1"}]}`
	calls := []contractCall{
		{"GET", "/api/v1/openapi.json", "", "", 200},
		{"GET", "/api/v1/whoami", "", "", 200},
		{"GET", "/api/v1/connections", "", "", 200},
		{"POST", "/api/v1/connections", js, conn, 201},
		{"POST", "/api/v1/connections", js, conn, 409},
		{"POST", "/api/v1/connections", js, tun, 201},
		{"POST", "/api/v1/connections", js, `{"name": "Bad Name!", "host": "", "port": -1, "threads": 9999}`, 400},
		{"POST", "/api/v1/connections", js, `{"name": 5}`, 400},
		{"POST", "/api/v1/connections", js, `{"nope": 5}`, 400},
		{"POST", "/api/v1/connections", js, `{"has_password": true}`, 400},
		{"POST", "/api/v1/connections", js, `{"name": "a\u0000b", "host": "h", "database": "d", "user": "u"}`, 400},
		{"POST", "/api/v1/connections", js, "{\"name\": \"\xff\xfe\", \"host\": \"h\", \"database\": \"d\", \"user\": \"u\"}", 400},
		{"POST", "/api/v1/connections", js, `{"name": "x", "host": "h", "database": "d", "user": "u", "port": 99999999999999999999}`, 400},
		{"POST", "/api/v1/connections", js, `{"name": "x", "host": "h", "database": "d", "user": "u", "port": 1.5}`, 400},
		{"POST", "/api/v1/connections", js, `[]`, 400},
		{"POST", "/api/v1/connections", js, `{} {}`, 400},
		{"POST", "/api/v1/connections", js, ``, 400},
		{"POST", "/api/v1/connections", js, `{"name": "x", "host": "h", "database": "d", "user": "u", "password": "` + strings.Repeat("a", 2<<20) + `"}`, 413},
		{"POST", "/api/v1/connections", "text/plain", conn, 415},
		{"POST", "/api/v1/connections", "", conn, 415},
		{"GET", "/api/v1/connections/db", "", "", 200},
		{"GET", "/api/v1/connections/tun", "", "", 200},
		{"GET", "/api/v1/connections/nope", "", "", 404},
		{"PUT", "/api/v1/connections/db", js, conn, 200},
		{"PUT", "/api/v1/connections/db", js, `{"name": "other", "host": "h", "database": "d", "user": "u"}`, 400},
		{"PUT", "/api/v1/connections/nope", js, `{"host": "h", "database": "d", "user": "u"}`, 404},
		{"GET", "/api/v1/connections/tun/public-key", "", "", 200},
		{"GET", "/api/v1/connections/tun/public-key?restricted=true", "", "", 200},
		{"GET", "/api/v1/connections/tun/public-key?restricted=maybe", "", "", 400},
		{"GET", "/api/v1/connections/db/public-key", "", "", 422},
		{"GET", "/api/v1/connections/tun/bastion-setup", "", "", 200},
		{"GET", "/api/v1/connections/tun/bastion-setup?hop=2", "", "", 200},
		{"GET", "/api/v1/connections/tun/bastion-setup?hop=0", "", "", 400},
		{"GET", "/api/v1/connections/tun/bastion-setup?hop=9", "", "", 400},
		{"GET", "/api/v1/connections/db/bastion-setup", "", "", 422},
		{"POST", "/api/v1/connections/db/rotate-key", "", "", 422},
		// A body meant for key-rotation would have replaced the key at once.
		{"POST", "/api/v1/connections/tun/rotate-key", js, `{"old_key_lifetime": "2h"}`, 422},
		{"POST", "/api/v1/connections/tun/rotate-key", js, `{}`, 200},
		{"POST", "/api/v1/connections/tun/rotate-key", "", "", 200},
		{"POST", "/api/v1/connections/tun/trust-host-key", js, `{"fingerprint": "SHA256:nope"}`, 422},
		{"POST", "/api/v1/connections/tun/trust-host-key", js, `{"fingerprint": 1}`, 400},
		{"GET", "/api/v1/connections/tun/key-rotation", "", "", 422},
		{"GET", "/api/v1/connections/db/key-rotation", "", "", 422},
		{"POST", "/api/v1/connections/tun/key-rotation", js, `{"old_key_lifetime": "1s"}`, 400},
		{"POST", "/api/v1/connections/tun/key-rotation", js, `{"old_key_lifetime": "2h"}`, 201},
		{"POST", "/api/v1/connections/tun/key-rotation", "", "", 422},
		{"GET", "/api/v1/connections/tun/key-rotation", "", "", 200},
		{"POST", "/api/v1/connections/tun/key-rotation/finish", "", "", 502},
		{"DELETE", "/api/v1/connections/tun/key-rotation", "", "", 200},
		{"DELETE", "/api/v1/connections/tun/key-rotation", "", "", 422},
		{"GET", "/api/v1/ssh-ca", "", "", 404},
		{"PUT", "/api/v1/ssh-ca/principals", js, `{"principals": ["dbtcloud"]}`, 404},
		{"POST", "/api/v1/ssh-ca", js, `{"principals": []}`, 400},
		{"POST", "/api/v1/ssh-ca", js, `{"principals": ["*"]}`, 400},
		{"POST", "/api/v1/ssh-ca", js, `{"principals": "dbtcloud"}`, 400},
		{"POST", "/api/v1/ssh-ca", "text/plain", `{"principals": ["dbtcloud"]}`, 415},
		{"POST", "/api/v1/ssh-ca", "", "", 201},
		{"POST", "/api/v1/ssh-ca", "", "", 409},
		{"POST", "/api/v1/ssh-ca", js, `{"principals": ["dbtcloud"]}`, 409},
		{"GET", "/api/v1/ssh-ca", "", "", 200},
		{"PUT", "/api/v1/ssh-ca/principals", js, `{"principals": ["dbtcloud", "etl"]}`, 200},
		{"PUT", "/api/v1/ssh-ca/principals", js, `{"principals": ["dbt,etl"]}`, 400},
		{"PUT", "/api/v1/ssh-ca/principals", js, `{"principals": []}`, 400},
		{"PUT", "/api/v1/ssh-ca/principals", js, `{}`, 400},
		{"PUT", "/api/v1/ssh-ca/principals", js, `{"principals": ["u"], "any": true}`, 400},
		{"PUT", "/api/v1/ssh-ca/principals", js, `{"nope": 1}`, 400},
		{"PUT", "/api/v1/ssh-ca/principals", "text/plain", `{"any": true}`, 415},
		{"GET", "/api/v1/ssh-ca", "", "", 200},
		{"PUT", "/api/v1/ssh-ca/principals", js, `{"any": true}`, 200},
		{"POST", "/api/v1/connections/db/query", js, `{"sql": "select 1 as n, null::text as t; create temp table x(a int)"}`, 200},
		{"POST", "/api/v1/connections/db/query", js, `{"sql": "select 1/0"}`, 502},
		{"POST", "/api/v1/connections/db/query", js, `{"sql": ""}`, 400},
		{"POST", "/api/v1/connections/db/query", js, `{"sql": 1}`, 400},
		{"POST", "/api/v1/connections/nope/query", js, `{"sql": "select 1"}`, 404},
		{"POST", "/api/v1/connections/db/test", "", "", 200},
		{"POST", "/api/v1/connections/db/test?stream=maybe", "", "", 400},
		{"POST", "/api/v1/connections/nope/test", "", "", 404},
		{"POST", "/api/v1/connections/test", js, conn, 200},
		{"POST", "/api/v1/connections/test", js, `{"host": "127.0.0.1", "port": 1, "database": "d", "user": "u", "pooler": "transaction"}`, 200},
		{"POST", "/api/v1/connections/test", js, `{"host": "h", "database": "d", "user": "u", "based_on": "nope"}`, 404},
		{"POST", "/api/v1/connections/test", js, `{"host": ""}`, 400},
		{"POST", "/api/v1/connections/db/grants", js, `{}`, 422},
		{"POST", "/api/v1/connections/db/grants", js, `{"target_schema": "public", "source_schemas": ["public"]}`, 200},
		{"POST", "/api/v1/connections/db/grants", js, `{"nope": 1}`, 400},
		{"GET", "/api/v1/tokens", "", "", 200},
		{"POST", "/api/v1/tokens", js, `{"name": "ci", "role": "editor"}`, 201},
		{"POST", "/api/v1/tokens", js, `{"name": "ci", "role": "editor"}`, 409},
		{"POST", "/api/v1/tokens", js, `{"name": "", "role": "king"}`, 400},
		{"DELETE", "/api/v1/tokens/nope", "", "", 404},
		{"GET", "/api/v1/jobs", "", "", 200},
		{"POST", "/api/v1/jobs", js, job, 201},
		{"POST", "/api/v1/jobs", js, job, 409},
		{"POST", "/api/v1/jobs", js, `{"name": "k", "connection": "nope", "steps": [], "timeout": "1y"}`, 400},
		{"POST", "/api/v1/jobs/apply", js, `{"jobs": [` + job + `]}`, 200},
		{"POST", "/api/v1/jobs/apply", js, `{"jobs": []}`, 400},
		{"POST", "/api/v1/jobs/apply", "application/yaml", "jobs:\n  - name: y\n    connection: db\n    steps:\n      - sql: select 1\n", 200},
		{"POST", "/api/v1/jobs/apply", "application/yaml", "jobs: [", 400},
		{"POST", "/api/v1/jobs/apply", "text/plain", "x", 415},
		{"GET", "/api/v1/jobs/j", "", "", 200},
		{"GET", "/api/v1/jobs/nope", "", "", 404},
		{"PUT", "/api/v1/jobs/j", js, job, 200},
		{"PUT", "/api/v1/jobs/j2", js, `{"connection": "db", "steps": [{"sql": "select 1"}]}`, 201},
		{"PUT", "/api/v1/jobs/j2", js, `{"name": "other", "connection": "db", "steps": [{"sql": "select 1"}]}`, 400},
		{"POST", "/api/v1/jobs/j/runs", "", "", 202},
		{"POST", "/api/v1/jobs/nope/runs", "", "", 404},
		{"GET", "/api/v1/runs", "", "", 200},
		{"GET", "/api/v1/runs?limit=0", "", "", 400},
		{"GET", "/api/v1/runs?limit=-1", "", "", 400},
		{"GET", "/api/v1/runs?limit=99999999999999999999", "", "", 400},
		{"GET", "/api/v1/runs?status=bogus", "", "", 400},
		{"GET", "/api/v1/runs?before=nope", "", "", 400},
		{"GET", "/api/v1/runs/nope", "", "", 404},
		{"POST", "/api/v1/runs/nope/cancel", "", "", 404},
		{"GET", "/api/v1/runs/nope/log", "", "", 404},
		{"GET", "/api/v1/runs/nope/log?after=-1", "", "", 400},
		{"GET", "/api/v1/runs/nope/events", "", "", 404},
		{"DELETE", "/api/v1/jobs/j2", "", "", 204},
		{"DELETE", "/api/v1/jobs/j2", "", "", 404},
		{"GET", "/api/v1/audit", "", "", 200},
		{"GET", "/api/v1/audit?limit=1", "", "", 200},
		{"GET", "/api/v1/audit?limit=0", "", "", 400},
		{"GET", "/api/v1/audit?before_seq=-1", "", "", 400},
		{"GET", "/api/v1/audit?since=yesterday-ish", "", "", 400},
		{"GET", "/api/v1/audit/verify", "", "", 200},
		{"GET", "/api/v1/audit/export", "", "", 200},
		{"GET", "/api/v1/audit/export?after_seq=x", "", "", 400},
		{"POST", "/api/v1/connections", js, `{"name": "meta", "host": "169.254.169.254", "port": 80, "database": "d", "user": "u"}`, 201},
		{"POST", "/api/v1/connections/meta/test", "", "", 200},
		{"POST", "/api/v1/connections/meta/grants", js, `{"target_schema": "public"}`, 422},
		{"POST", "/api/v1/connections/test", js, `{"host": "169.254.169.254", "database": "d", "user": "u"}`, 200},
		{"POST", "/api/v1/connections/tun/trust-host-key", js, `{}`, 400},
		{"POST", "/api/v1/tokens", js, `{"name": "a b", "role": "viewer"}`, 400},
		{"HEAD", "/api/v1/connections", "", "", 200},
		{"OPTIONS", "/api/v1/connections", "", "", 405},
		{"PATCH", "/api/v1/connections/db", js, `{}`, 405},
		{"DELETE", "/api/v1/connections", "", "", 405},
		{"GET", "/api/v1/nope", "", "", 404},
	}
	for _, c := range calls {
		r := send(c, srv.AdminToken)
		if r.status != c.want {
			t.Errorf("%s %s: %d, want %d: %.400s", c.method, c.path, r.status, c.want, r.body)
		}
	}
	// The prefix without its slash is a JSON 404 too, not ServeMux's
	// HTML redirect to the slash.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1", nil)
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken)
	if res, err := noRedirect.Do(req); err != nil {
		t.Fatal(err)
	} else {
		_ = res.Body.Close()
		if res.StatusCode != http.StatusNotFound || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
			t.Errorf("GET /api/v1: %d %s, want a JSON 404", res.StatusCode, res.Header.Get("Content-Type"))
		}
	}
	// A value out of range is a field problem, named as the field.
	r := send(contractCall{"POST", "/api/v1/connections/tun/key-rotation", js, `{"old_key_lifetime": "9000h"}`, 400}, srv.AdminToken)
	if eb := r.errorBody(t); r.status != http.StatusBadRequest || eb.Code != api.CodeValidationFailed ||
		!strings.Contains(eb.Fields.Map()["old_key_lifetime"], "accepted is 1h to 8784h") {
		t.Errorf("old_key_lifetime 9000h: %d %s", r.status, r.body)
	}

	// The run, its log and its events once it ended.
	var runs struct {
		Runs []struct {
			ID string `json:"id"`
		} `json:"runs"`
	}
	if r := send(contractCall{"GET", "/api/v1/runs?job=j&limit=1", "", "", 200}, srv.AdminToken); json.Unmarshal([]byte(r.body), &runs) != nil || len(runs.Runs) != 1 {
		t.Fatalf("runs of j: %s", r.body)
	}
	id := runs.Runs[0].ID
	waitRunState(t, srv.Client(t, srv.AdminToken), id, func(r *jobs.Run) bool { return r.Status.Terminal() })
	for _, c := range []contractCall{
		{"GET", "/api/v1/runs/" + id, "", "", 200},
		{"GET", "/api/v1/runs?limit=1&before=" + id, "", "", 200},
		{"GET", "/api/v1/runs/" + id + "/log", "", "", 200},
		{"GET", "/api/v1/runs/" + id + "/log?limit=0", "", "", 400},
		{"GET", "/api/v1/runs/" + id + "/events", "", "", 200},
		{"POST", "/api/v1/runs/" + id + "/cancel", "", "", 422},
		{"DELETE", "/api/v1/connections/db", "", "", 422},
		{"DELETE", "/api/v1/jobs/j", "", "", 204},
		{"DELETE", "/api/v1/jobs/y", "", "", 204},
		{"DELETE", "/api/v1/connections/db", "", "", 204},
		{"DELETE", "/api/v1/connections/db", "", "", 404},
	} {
		if r := send(c, srv.AdminToken); r.status != c.want {
			t.Errorf("%s %s: %d, want %d: %.400s", c.method, c.path, r.status, c.want, r.body)
		}
	}
	// Refused credentials and roles.
	for _, c := range []contractCall{
		{"GET", "/api/v1/connections", "", "", 401},
		{"POST", "/api/v1/connections", js, tun, 403},
		{"GET", "/api/v1/tokens", "", "", 403},
	} {
		token := viewer.Token
		if c.want == 401 {
			token = ""
		}
		if r := send(c, token); r.status != c.want {
			t.Errorf("%s %s: %d, want %d: %.400s", c.method, c.path, r.status, c.want, r.body)
		}
	}
}

// TestUnknownFieldsNamedByPath checks that an unknown or read-only field
// inside an object of the body is named by its path, array indices
// included, as type and validation errors are (encoding/json names only
// the key), so that an integrator finds it.
func TestUnknownFieldsNamedByPath(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	conn := `"name": "x", "host": "h", "database": "d", "user": "u", `
	for _, tc := range []struct{ path, body, field, problem string }{
		{"/connections", `{` + conn + `"ssh_tunnel": {"host": "b", "user": "u", "bogus": 1}}`, "ssh_tunnel.bogus", "unknown field"},
		{"/connections", `{` + conn + `"ssh_tunnel": {"host": "b", "user": "u", "public_key": "k"}}`, "ssh_tunnel.public_key", "read-only"},
		{"/connections", `{` + conn + `"ssh_hops": [{"host": "b", "user": "u"}, {"host": "c", "user": "u", "own_public_key": "k"}]}`, "ssh_hops.1.own_public_key", "read-only"},
		{"/connections", `{` + conn + `"auth": {"kind": "lakebase", "has_client_secret": true}}`, "auth.has_client_secret", "read-only"},
		{"/connections", `{` + conn + `"effective_require_auth": "x"}`, "effective_require_auth", "read-only"},
		{"/connections", `{` + conn + `"Bogus": 1}`, "Bogus", "unknown field"},
		{"/connections/test", `{"host": "h", "database": "d", "user": "u", "ssh_tunnel": {"host": "b", "user": "u", "bogus": 1}}`, "ssh_tunnel.bogus", "unknown field"},
		{"/jobs", `{"name": "j", "connection": "x", "steps": [{"sql": "select 1", "bogus": 1}]}`, "steps[0].bogus", "unknown field"},
		{"/jobs/apply", `{"jobs": [{"name": "j", "connection": "x", "steps": [{"sql": "s"}], "next_run_at": 1}]}`, "jobs[0](j).next_run_at", "read-only"},
	} {
		r := do(t, "POST", srv.URL+"/api/v1"+tc.path, srv.AdminToken, "application/json", tc.body)
		eb := r.errorBody(t)
		if r.status != http.StatusBadRequest || eb.Code != api.CodeInvalidJSON || len(eb.Fields) != 1 ||
			!strings.Contains(eb.Fields.Map()[tc.field], tc.problem) || !strings.Contains(eb.Message, tc.field) {
			t.Errorf("POST %s %s: %d %s; want field %s", tc.path, tc.body, r.status, r.body, tc.field)
		}
	}
}
