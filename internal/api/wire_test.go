package api_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// fill sets every exported field of v (a pointer) to a value that is not
// its zero, recursively, so that its JSON has every key.
func fill(v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Pointer:
		if depth > 4 {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		fill(v.Elem(), depth+1)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() && f.Tag.Get("json") != "-" {
				fill(v.Field(i), depth)
			}
		}
	case reflect.Slice:
		if depth > 4 {
			return
		}
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0), depth+1)
		v.Set(s)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(2)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(2)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	}
}

// sameJSON checks that from's JSON, read strictly as a to, writes the
// same JSON again: the two types have the same fields on the wire.
func sameJSON(t *testing.T, from, to any) {
	t.Helper()
	fill(reflect.ValueOf(from), 0)
	want, err := json.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(want))
	dec.DisallowUnknownFields()
	if err := dec.Decode(to); err != nil {
		t.Errorf("%T as %T: %v\n%s", from, to, err, want)
		return
	}
	got, err := json.Marshal(to)
	if err != nil {
		t.Fatal(err)
	}
	var w, g any
	_ = json.Unmarshal(want, &w)
	_ = json.Unmarshal(got, &g)
	if !reflect.DeepEqual(w, g) {
		t.Errorf("%T and %T differ on the wire:\n%s\n%s", from, to, want, got)
	}
}

// TestWireTypesMatch keeps package apiwire (the client's types) the same
// on the wire as what the server sends and reads: every view, event and
// request body, with every field set.
func TestWireTypesMatch(t *testing.T) {
	t.Parallel()
	// What the server sends, read by the client.
	sameJSON(t, &app.ConnectionView{}, &apiwire.ConnectionView{})
	sameJSON(t, &api.ConnectionList{}, &apiwire.ConnectionList{})
	sameJSON(t, &app.KeyRotation{}, &apiwire.KeyRotation{})
	sameJSON(t, &api.TestReport{}, &apiwire.TestReport{})
	sameJSON(t, &api.QueryResponse{}, &apiwire.QueryResponse{})
	sameJSON(t, &api.GrantsResponse{}, &apiwire.GrantsResponse{})
	sameJSON(t, &app.NewToken{}, &apiwire.NewToken{})
	sameJSON(t, &api.TokenList{}, &apiwire.TokenList{})
	sameJSON(t, &api.WhoAmI{}, &apiwire.WhoAmI{})
	sameJSON(t, &app.JobView{}, &apiwire.JobView{})
	sameJSON(t, &api.JobList{}, &apiwire.JobList{})
	sameJSON(t, &api.ApplyResponse{}, &apiwire.ApplyResponse{})
	sameJSON(t, &jobs.Run{}, &apiwire.Run{})
	sameJSON(t, &api.RunList{}, &apiwire.RunList{})
	sameJSON(t, &api.RunLog{}, &apiwire.RunLog{})
	sameJSON(t, &api.ErrorResponse{}, &apiwire.ErrorResponse{})
	sameJSON(t, &app.SSHCAView{}, &apiwire.SSHCAView{})
	sameJSON(t, &[]app.HopKeyLines{}, &[]apiwire.HopKeyLines{})
	sameJSON(t, &api.AuditList{}, &apiwire.AuditList{})
	sameJSON(t, &audit.Record{}, &apiwire.AuditRecord{})
	sameJSON(t, &audit.Verification{}, &apiwire.AuditVerification{})
	// What the client sends, read by the server.
	sameJSON(t, &apiwire.ConnectionInput{}, &api.ConnectionInput{})
	sameJSON(t, &apiwire.TestDraftRequest{}, &api.TestDraftRequest{})
	sameJSON(t, &apiwire.ApplyRequest{}, &api.ApplyRequest{})
	sameJSON(t, &apiwire.JobInput{}, &api.JobInput{})
	sameJSON(t, &apiwire.TokenCreateRequest{}, &api.TokenCreateRequest{})
	sameJSON(t, &apiwire.GrantsRequest{}, &api.GrantsRequest{})
	sameJSON(t, &apiwire.KeyRotationRequest{}, &api.KeyRotationRequest{})
	sameJSON(t, &apiwire.SSHCAInitRequest{}, &api.SSHCAInitRequest{})
	sameJSON(t, &apiwire.SSHCAPrincipalsRequest{}, &api.SSHCAPrincipalsRequest{})
}
