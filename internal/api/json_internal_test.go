package api

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// TestTypeErrorPath: a type error names the value at fault by its full
// path, array indices included, as validation errors name fields
// (steps[1].command, ssh_hops.1.port, jobs[0](nightly).timeout), where
// encoding/json leaves the indices out (steps.command).
func TestTypeErrorPath(t *testing.T) {
	t.Parallel()
	// A type of its own for shapes no request has: nested lists, maps,
	// keys outside ASCII.
	type leaf struct {
		N int `json:"n"`
	}
	type shapes struct {
		Grid   [][]int          `json:"grid"`
		Leaves []leaf           `json:"leaves"`
		ByName map[string][]int `json:"by_name"`
		Ünï    []string         `json:"ünï"`
		Deep   []struct {
			Inner []leaf `json:"inner"`
		} `json:"deep"`
	}
	for _, tc := range []struct {
		name, body string
		into       any
		path       string
	}{
		{"top level", `  [1, 2]`, &ConnectionInput{}, ""},
		{"top-level field", `{"port": "5432"}`, &ConnectionInput{}, "port"},
		{"nested object", `{"ssh_tunnel": {"host": "b", "port": true}}`, &ConnectionInput{}, "ssh_tunnel.port"},
		{"second step's command", `{"name": "j", "steps": [{"sql": "select 1"}, {"command": 5}]}`, &JobInput{}, "steps[1].command"},
		{"element of a command", `{"steps": [{"sql": "s"}, {"command": ["sh", ["x"]]}]}`, &JobInput{}, "steps[1].command[1]"},
		{"step given as a list", `{"steps": [{"sql": "s"}, []]}`, &JobInput{}, "steps[1]"},
		{"key in another case", `{"steps": [{"sql": "s"}, {"Command": {}}]}`, &JobInput{}, "steps[1].command"},
		{"second hop's port", `{"ssh_hops": [{"host": "a", "port": 22}, {"host": "b", "port": "22"}]}`, &ConnectionInput{}, "ssh_hops.1.port"},
		{"list of lists", `{"grid": [[1, 2], [3, "x"]]}`, &shapes{}, "grid[1][1]"},
		{"list in a list", `{"grid": [[1], [2, [3]]]}`, &shapes{}, "grid[1][1]"},
		{"objects in lists in objects", `{"deep": [{"inner": []}, {"inner": [{"n": 1}, {"n": 2}, {"n": 3.5}]}]}`, &shapes{}, "deep[1].inner[2].n"},
		{"map value", `{"by_name": {"a": [1], "b": [2, "two"]}}`, &shapes{}, "by_name.b[1]"},
		{"unicode keys", `{"by_name": {"日本": [1], "ключ": [true]}, "ünï": ["a"]}`, &shapes{}, "by_name.ключ[0]"},
		{"unicode field", `{"grid": [], "ünï": ["a", "b", 3]}`, &shapes{}, "ünï[2]"},
		{"escaped keys", `{"by_name": {"\u65e5\"": [1, {}]}}`, &shapes{}, "by_name.日\"[1]"},
		{"strings with escapes before", `{"leaves": [{"n": 1}, {"n": "\u00e9\\\""}]}`, &shapes{}, "leaves[1].n"},
		// Errors of UnmarshalJSON methods carry no offset: found by field.
		{"duration", `{"ssh_tunnel": {"host": "b", "keepalive_interval": "soon"}}`, &ConnectionInput{}, "ssh_tunnel.keepalive_interval"},
		{"duration of the second job", `{"jobs": [{"name": "a", "timeout": "30s"}, {"name": "b", "timeout": "soon"}]}`, &ApplyRequest{}, "jobs[1](b).timeout"},
		{"password", `{"password": 5}`, &TestDraftRequest{}, "password"},
		{"embedded struct's field", `{"ssh_hops": [{}, {"own_key": "yes"}]}`, &TestDraftRequest{}, "ssh_hops.1.own_key"},
		{"job by name", `{"jobs": [{"name": "nightly", "steps": [{"sql": "s"}, {"command": 5}]}]}`, &ApplyRequest{}, "jobs[0](nightly).steps[1].command"},
		{"job named after the error", `{"jobs": [{"steps": [{"command": 5}]}, {"steps": [{"command": 5}], "name": "late"}]}`, &ApplyRequest{}, "jobs[0].steps[0].command"},
		{"job without a valid name", `{"jobs": [{"name": "a b", "retries": "2"}]}`, &ApplyRequest{}, "jobs[0].retries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := json.Unmarshal([]byte(tc.body), tc.into)
			var te *json.UnmarshalTypeError
			if !errors.As(err, &te) {
				t.Fatalf("not a type error: %v", err)
			}
			if got := typeErrorPath([]byte(tc.body), reflect.TypeOf(tc.into), te); got != tc.path {
				t.Errorf("path %q, want %q (encoding/json: %q at %d)", got, tc.path, te.Field, te.Offset)
			}
		})
	}
}

// TestTypeText: a type error says what the field accepts in words.
func TestTypeText(t *testing.T) {
	t.Parallel()
	for typ, want := range map[reflect.Type]string{
		reflect.TypeFor[[]string]():   "a list of strings",
		reflect.TypeFor[[][]int]():    "a list of lists",
		reflect.TypeFor[[]HopInput](): "a list of objects",
		reflect.TypeFor[*[]bool]():    "a list of true or false values",
		reflect.TypeFor[[]Duration](): `a list of durations such as "30s"`,
		reflect.TypeFor[int64]():      "an integer",
		reflect.TypeFor[*Password]():  "a string",
	} {
		if got := typeText(typ); got != want {
			t.Errorf("%v: %q, want %q", typ, got, want)
		}
	}
}

// TestKeyPathsWithIndices: unknown keys and keys given twice are named
// with their array indices too.
func TestKeyPathsWithIndices(t *testing.T) {
	t.Parallel()
	body := []byte(`{"ssh_hops": [{"host": "a"}, {"host": "b", "bogus": 1}]}`)
	if got := unknownFieldPath(body, reflect.TypeFor[*ConnectionInput](), "bogus"); got != "ssh_hops.1.bogus" {
		t.Errorf("unknown field: %q", got)
	}
	body = []byte(`{"jobs": [{"name": "a"}, {"name": "nightly", "steps": [{"sql": "s"}, {"sql": "s", "bogus": 1}]}]}`)
	if got := unknownFieldPath(body, reflect.TypeFor[*ApplyRequest](), "bogus"); got != "jobs[1](nightly).steps[1].bogus" {
		t.Errorf("unknown field: %q", got)
	}
	err := keyError([]byte(`{"steps": [{"sql": "s"}, {"sql": "s", "sql": "t"}]}`), reflect.TypeFor[*JobInput]())
	var ae *apiError
	if !errors.As(err, &ae) || len(ae.fields) != 1 || ae.fields[0].Field != "steps[1].sql" {
		t.Errorf("key twice: %v", err)
	}
}
