package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// The fuzz targets send arbitrary bodies to the routes that decode request
// bodies, through the real handlers, and check what any body must get: no
// panic; a 2xx, or a 4xx with a JSON error body whose code and message are
// set and whose message names every field it lists (and lists the field
// when encoding/json blames one); and, when refused, no change in the
// store. Seeds are in testdata/fuzz; scripts/fuzz.sh runs each target for
// a few seconds in `make test`.

// fuzzAPI is the REST API over an app service on a temporary SQLite store,
// with a direct connection "wh" (nothing dials it) and an admin token. It
// is called in-process: no listener, and no server wrapper that would turn
// a panic into a 500.
type fuzzAPI struct {
	h     http.Handler
	st    *sqlite.Store
	token string
}

// newFuzzAPI builds the API once per fuzz target (and per fuzzing worker),
// outside f.Fuzz.
func newFuzzAPI(f *testing.F) *fuzzAPI {
	f.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(f.TempDir(), sqlite.FileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = st.Close() })
	key := make([]byte, secret.KeySize)
	_, _ = rand.Read(key)
	kr, err := secret.NewKeyring(key)
	if err != nil {
		f.Fatal(err)
	}
	svc, err := app.New(app.Config{Store: st, Keyring: kr, DialTimeout: time.Second})
	if err != nil {
		f.Fatal(err)
	}
	admin, err := svc.BootstrapAdmin(ctx)
	if err != nil || admin == nil {
		f.Fatalf("bootstrap admin: %v", err)
	}
	if _, err := svc.CreateConnection(ctx, connection.Spec{Name: "wh", Host: "db.internal", Database: "analytics",
		User: "dbt", Password: secret.New("pw")}); err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	api.New(api.Config{App: svc}).Register(mux)
	return &fuzzAPI{h: mux, st: st, token: admin.Token}
}

// snapshot returns everything a request could change in the store:
// connections (with their sealed secrets and versions), jobs and tokens
// (without the last use, which authentication updates).
func (fa *fuzzAPI) snapshot(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	cs, err := fa.st.ListConnections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	js, err := fa.st.ListJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := fa.st.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range ts {
		tok.LastUsedAt = time.Time{}
	}
	b, err := json.Marshal([]any{cs, js, ts})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// check sends body to method path as contentType and checks the answer.
// probe, when not nil, is a fresh value of the route's request type: a
// body that encoding/json refuses because of one field must get an error
// that lists that field.
func (fa *fuzzAPI) check(t *testing.T, method, path, contentType string, body []byte, probe any) {
	t.Helper()
	before := fa.snapshot(t)
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+fa.token)
	req.Header.Set("Content-Type", contentType)
	rec := httptest.NewRecorder()
	fa.h.ServeHTTP(rec, req)
	res := rec.Result()
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		return
	}
	if res.StatusCode < 400 || res.StatusCode >= 500 {
		t.Fatalf("%s %s: status %d, want 2xx or 4xx\n%s", method, path, res.StatusCode, rec.Body)
	}
	if after := fa.snapshot(t); after != before {
		t.Fatalf("%s %s: refused with %d, but the store changed\nbefore: %s\nafter:  %s", method, path, res.StatusCode, before, after)
	}
	if mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")); mt != "application/json" {
		t.Fatalf("%s %s: %d with Content-Type %q, want application/json", method, path, res.StatusCode, res.Header.Get("Content-Type"))
	}
	var eb api.ErrorResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil {
		t.Fatalf("%s %s: %d with a body that is no error response: %v\n%s", method, path, res.StatusCode, err, rec.Body)
	}
	e := eb.Error
	if e.Code == "" || strings.TrimSpace(e.Message) == "" {
		t.Fatalf("%s %s: %d with an empty code or message: %s", method, path, res.StatusCode, rec.Body)
	}
	if e.Code == api.CodeValidationFailed && len(e.Fields) == 0 {
		t.Fatalf("%s %s: validation_failed without fields: %s", method, path, rec.Body)
	}
	for _, fe := range e.Fields {
		if fe.Field == "" || strings.TrimSpace(fe.Problem) == "" || !strings.Contains(e.Message, fe.Field) {
			t.Fatalf("%s %s: field problem %q: %q is empty or not in the message %q", method, path, fe.Field, fe.Problem, e.Message)
		}
	}
	if probe == nil || len(body) >= api.MaxBodyBytes {
		return
	}
	if !utf8.Valid(body) && contentType == jsonType {
		// Refused before it is decoded: encoding/json would take a byte
		// that is not UTF-8 as U+FFFD.
		if e.Code != api.CodeInvalidJSON || !strings.Contains(e.Message, "is not valid UTF-8") {
			t.Fatalf("%s %s: a body that is not UTF-8 refused as %s: %s", method, path, e.Code, rec.Body)
		}
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(probe)
	var te *json.UnmarshalTypeError
	// A key with an empty name ({"": 1}) is no field to name.
	oneField := (errors.As(err, &te) && te.Field != "") ||
		(err != nil && strings.HasPrefix(err.Error(), "json: unknown field ") && err.Error() != `json: unknown field ""`)
	if oneField && (e.Code != api.CodeInvalidJSON || len(e.Fields) != 1) {
		t.Fatalf("%s %s: the body has one bad field (%v), but the error names %d fields: %s", method, path, err, len(e.Fields), rec.Body)
	}
}

const jsonType = "application/json"

func FuzzConnectionCreate(f *testing.F) {
	fa := newFuzzAPI(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fa.check(t, http.MethodPost, api.Prefix+"/connections", jsonType, body, &api.ConnectionInput{})
	})
}

func FuzzConnectionUpdate(f *testing.F) {
	fa := newFuzzAPI(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fa.check(t, http.MethodPut, api.Prefix+"/connections/wh", jsonType, body, &api.ConnectionInput{})
	})
}

func FuzzJobCreate(f *testing.F) {
	fa := newFuzzAPI(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fa.check(t, http.MethodPost, api.Prefix+"/jobs", jsonType, body, &api.JobInput{})
	})
}

// FuzzJobsApply sends a jobs file as YAML (yaml true) or an ApplyRequest
// as JSON.
func FuzzJobsApply(f *testing.F) {
	fa := newFuzzAPI(f)
	f.Fuzz(func(t *testing.T, yaml bool, body []byte) {
		if yaml {
			fa.check(t, http.MethodPost, api.Prefix+"/jobs/apply", "application/yaml", body, nil)
			return
		}
		fa.check(t, http.MethodPost, api.Prefix+"/jobs/apply", jsonType, body, &api.ApplyRequest{})
	})
}

func FuzzTokenCreate(f *testing.F) {
	fa := newFuzzAPI(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fa.check(t, http.MethodPost, api.Prefix+"/tokens", jsonType, body, &api.TokenCreateRequest{})
	})
}

// FuzzQuery posts query bodies to a connection that does not exist: a body
// that decodes gets 404 before anything is dialled.
func FuzzQuery(f *testing.F) {
	fa := newFuzzAPI(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fa.check(t, http.MethodPost, api.Prefix+"/connections/nope/query", jsonType, body, &api.QueryRequest{})
	})
}
