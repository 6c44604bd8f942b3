package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// readOnlyFields are fields of a ConnectionView or a JobView that a
// request may not set; naming them gives a better message than "unknown
// field".
var readOnlyFields = map[string]bool{
	"has_password": true, "created_at": true, "updated_at": true, "public_key": true,
	"public_key_fingerprint": true, "previous_public_key": true, "host_key_fingerprint": true,
	"pending_host_key_fingerprint": true, "pending_host_key_seen": true, "key_rotation": true, "key_used_at": true,
	"effective_require_auth": true, "health": true, "host_key_fingerprints": true,
	// of a hop (ssh_hops) and of auth
	"own_public_key": true, "own_key_fingerprint": true, "has_client_secret": true, "has_service_account_key": true,
	// of a JobView
	"next_run_at": true, "last_run": true,
}

// decodeJSON reads the request body into v: it must be application/json, at
// most MaxBodyBytes, one JSON value without unknown fields, keys given
// twice in an object, or keys that match a field only by case. Errors
// name the field at fault.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	return decodeJSONLimit(w, r, v, MaxBodyBytes)
}

// decodeOptionalJSON is decodeJSON for an operation whose body is
// optional: an empty body (or white space only), with any Content-Type or
// none, leaves v as it is.
func decodeOptionalJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		return decodeError(err, nil, nil)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return decodeJSON(w, r, v)
}

// refuseBody refuses a request to an operation that takes no body when it
// has one (anything but white space or an empty JSON object), saying why
// the operation takes none.
func refuseBody(w http.ResponseWriter, r *http.Request, why string) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<10))
	if err != nil {
		return decodeError(err, nil, nil)
	}
	if b := bytes.TrimSpace(body); len(b) == 0 || bytes.Equal(bytes.Join(bytes.Fields(b), nil), []byte("{}")) {
		return nil
	}
	return &apiError{status: http.StatusUnprocessableEntity, code: CodeInvalid,
		message: fmt.Sprintf("%s %s takes no body: %s", r.Method, r.URL.Path, why)}
}

// decodeJSONLimit is decodeJSON with a body limit of its own.
func decodeJSONLimit(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		if ct == "" {
			ct = "(none)"
		}
		return &apiError{status: http.StatusUnsupportedMediaType, code: CodeUnsupportedMediaType,
			message: fmt.Sprintf("Content-Type %s is not accepted: send the body as application/json", ct)}
	}
	// Read at once (at most limit bytes): an unknown field is named by
	// its path, which is looked up in the body, and keys are checked in it.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return decodeError(err, nil, nil) // too large, or the body broke off
	}
	// encoding/json would save a byte that is not UTF-8 as U+FFFD, which
	// changes a statement or a name without a word.
	if !utf8.Valid(body) {
		return &apiError{status: http.StatusBadRequest, code: CodeInvalidJSON,
			message: fmt.Sprintf("invalid JSON: byte %d is not valid UTF-8; send the body as UTF-8 text", invalidUTF8At(body))}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err, body, reflect.TypeOf(v))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return &apiError{status: http.StatusBadRequest, code: CodeInvalidJSON,
			message: "invalid JSON: unexpected data after the JSON object; send exactly one object"}
	}
	return keyError(body, reflect.TypeOf(v))
}

// invalidUTF8At returns the offset of the first byte of b that is not
// part of valid UTF-8 (from 1, as encoding/json counts syntax errors).
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i + 1
		}
		i += size
	}
	return len(b)
}

// decodeError turns an encoding/json error into an apiError naming the
// field; body is the request body, decoded into a t.
func decodeError(err error, body []byte, t reflect.Type) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	bad := func(msg string) error {
		return &apiError{status: http.StatusBadRequest, code: CodeInvalidJSON, message: "invalid JSON: " + msg}
	}
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.Is(err, io.EOF):
		return bad("the request body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return bad("the request body ends in the middle of a JSON value")
	case errors.As(err, &se):
		return bad(fmt.Sprintf("syntax error at byte %d: %s", se.Offset, strings.TrimPrefix(se.Error(), "json: ")))
	case errors.As(err, &te):
		field := typeErrorPath(body, t, te)
		if field == "" {
			return bad(fmt.Sprintf("expected %s, got %s", typeText(te.Type), te.Value))
		}
		return fieldError(http.StatusBadRequest, CodeInvalidJSON, field,
			fmt.Sprintf("expected %s, got %s", typeText(te.Type), te.Value))
	}
	// encoding/json has no error type for unknown fields; its message
	// format ("json: unknown field \"x\"") has been stable since Go 1.10.
	if quoted, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name, uerr := strconv.Unquote(quoted) // the key as sent, e.g. a"b for "a\"b"
		if uerr != nil {
			name = strings.Trim(quoted, `"`)
		}
		problem := "unknown field: see the request schema in " + Prefix + "/openapi.json"
		if name == "" {
			// No field to name: say so, not "invalid request: : unknown field".
			return bad(`the object has a key with an empty name (""), which is no field: see the request schema in ` + Prefix + "/openapi.json")
		}
		if readOnlyFields[name] {
			problem = "read-only: it is in responses only; leave it out of requests"
		}
		return fieldError(http.StatusBadRequest, CodeInvalidJSON, unknownFieldPath(body, t, name), problem)
	}
	return bad(strings.TrimPrefix(err.Error(), "json: "))
}

// typeText describes what a Go type accepts in JSON.
func typeText(t reflect.Type) string {
	if t == nil {
		return "another value"
	}
	switch t {
	case reflect.TypeFor[Duration]():
		return `a duration such as "30s" or a number of seconds`
	case reflect.TypeFor[Password]():
		return "a string"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "a list of " + pluralText(t.Elem())
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return typeText(t.Elem())
	}
	return "another value"
}

// pluralText names the values of a Go type in a list: "strings".
func pluralText(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case reflect.TypeFor[Duration](), reflect.TypeFor[connection.Duration]():
		return `durations such as "30s"`
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integers"
	case reflect.Float32, reflect.Float64:
		return "numbers"
	case reflect.String:
		return "strings"
	case reflect.Bool:
		return "true or false values"
	case reflect.Slice, reflect.Array:
		return "lists"
	case reflect.Struct, reflect.Map:
		return "objects"
	}
	return "values"
}

// jsonKind describes a JSON value without its content (which may be a
// secret).
func jsonKind(b []byte) string {
	s := strings.TrimSpace(string(b))
	switch {
	case s == "":
		return "nothing"
	case s[0] == '"':
		return "a string"
	case s[0] == '{':
		return "an object"
	case s[0] == '[':
		return "an array"
	case s == "true" || s == "false":
		return "a boolean"
	case s == "null":
		return "null"
	}
	return "a number"
}

// Password is a write-only secret in a request body. It sends and reads
// its text in JSON, and prints, logs and formats as [redacted] like the
// secret.Value it holds.
type Password struct {
	secret.Value
}

// NewPassword wraps a secret for a request.
func NewPassword(v secret.Value) *Password { return &Password{Value: v} }

// MarshalJSON writes the secret's text: a request must carry it.
func (p Password) MarshalJSON() ([]byte, error) { return json.Marshal(p.Reveal()) }

// UnmarshalJSON reads a JSON string. On error it does not echo the value.
func (p *Password) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: jsonKind(b), Type: reflect.TypeFor[Password]()}
	}
	p.Value = secret.New(s)
	return nil
}

// Duration is a duration in JSON: a string such as "30s" or "1m", or a
// number of seconds. It writes as a string.
type Duration connection.Duration

// MarshalJSON writes the duration as a string such as "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return connection.Duration(d).MarshalJSON() }

// UnmarshalJSON reads "30s"-style strings or a number of seconds. Errors
// are *json.UnmarshalTypeError, so that the decoder adds the field's path.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if err := (*connection.Duration)(d).UnmarshalJSON(b); err != nil {
		v := jsonKind(b)
		switch {
		case v == "a string" && len(b) <= 64:
			v = "string " + string(b)
		case errors.Is(err, connection.ErrSecondsRange) && len(b) <= 64:
			v = fmt.Sprintf("number %s, more seconds than a duration holds (at most %d seconds)", b, connection.MaxSeconds)
		}
		return &json.UnmarshalTypeError{Value: v, Type: reflect.TypeFor[Duration]()}
	}
	return nil
}

// unknownFieldPath returns the path of the first key named name in body
// for which type t has no field, in the notation of validation errors
// (see walkJSON). encoding/json names only the key of an unknown field;
// name itself is returned when the key is not found.
func unknownFieldPath(body []byte, t reflect.Type, name string) string {
	path := name
	walkJSON(body, t, func(k jsonKey) bool {
		if k.in != nil && k.in.Kind() == reflect.Struct && k.field == "" && k.key == name {
			path = k.path()
			return true
		}
		return false
	}, nil)
	return jobLabel(body, t, path)
}

// typeErrorPath returns the path of the value of body (decoded into a t)
// that te is about, in the notation of validation errors (steps[1].command,
// ssh_hops.1.port), where encoding/json names it without array indices
// (steps.command). A type error of encoding/json has the offset just after
// the value (after the '[' or '{' of an array or object); one returned by
// an UnmarshalJSON method (Duration, Password) has none, and is found as
// the first value at its field that its type does not read. te.Field
// (without the names of embedded structs) when neither is found.
func typeErrorPath(body []byte, t reflect.Type, te *json.UnmarshalTypeError) string {
	// The path names structs embedded in a body (TestDraftRequest's
	// ConnectionInput) by their Go names, which are no JSON fields.
	field := strings.TrimPrefix(te.Field, "ConnectionInput.")
	path, found := field, false
	if te.Offset > 0 {
		walkJSON(body, t, nil, func(v jsonValue) bool {
			if v.first == te.Offset {
				path, found = v.path, true
			}
			return found
		})
	}
	if !found && te.Type != nil {
		walkJSON(body, t, nil, func(v jsonValue) bool {
			if v.plain == field && json.Unmarshal(body[v.start:v.end], reflect.New(te.Type).Interface()) != nil {
				path, found = v.path, true
			}
			return found
		})
	}
	return jobLabel(body, t, path)
}

// jobLabel puts the job's name after the "jobs[N]" that starts path in a
// body of POST /jobs/apply (an ApplyRequest), as validation errors name a
// job's fields: jobs[0](nightly).steps[1].command. Unchanged when the job
// has no valid name.
func jobLabel(body []byte, t reflect.Type, path string) string {
	if t != reflect.TypeFor[*ApplyRequest]() {
		return path
	}
	after, ok := strings.CutPrefix(path, "jobs[")
	n, rest, closed := strings.Cut(after, "]")
	i, err := strconv.Atoi(n)
	if !ok || !closed || err != nil {
		return path
	}
	var names struct {
		Jobs []struct {
			Name any `json:"name"`
		} `json:"jobs"`
	}
	_ = json.Unmarshal(body, &names) // fills what it can: the body has errors
	if i >= len(names.Jobs) {
		return path
	}
	name, _ := names.Jobs[i].Name.(string)
	if connection.ValidateName(name) != nil {
		return path
	}
	return fmt.Sprintf("jobs[%d](%s)%s", i, name, rest)
}

// keyError refuses a body, decoded into a t, in which an object has a
// key twice or a key that matches a field only by case: encoding/json
// takes either, the last one winning ({"name":"a","NAME":"b"} is "b").
// nil when there is none.
func keyError(body []byte, t reflect.Type) error {
	var k jsonKey
	ok := walkJSON(body, t, func(key jsonKey) bool {
		k = key
		return k.again || (k.field != "" && k.field != k.key)
	}, nil)
	switch {
	case !ok:
		return nil
	case k.field != "" && k.field != k.key:
		field := jobLabel(body, t, jsonKey{at: k.at, key: k.field}.path())
		return fieldError(http.StatusBadRequest, CodeInvalidJSON, field,
			fmt.Sprintf("the key is written %q: keys are case-sensitive; accepted is %q", k.key, k.field))
	}
	return fieldError(http.StatusBadRequest, CodeInvalidJSON, jobLabel(body, t, k.path()),
		fmt.Sprintf("%q is given twice in one object: send each key once", k.key))
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// jsonKey is a key of an object in a request body, met by walkJSON.
type jsonKey struct {
	key   string       // as sent
	at    string       // the object's path (see walkJSON)
	in    reflect.Type // the object's type: a struct, a map, or nil when unknown
	field string       // the JSON name of the struct field it fills, "" when none
	again bool         // the object has the key already
}

// path is the key's path, e.g. ssh_tunnel.port.
func (k jsonKey) path() string {
	if k.at == "" {
		return k.key
	}
	return k.at + "." + k.key
}

// jsonValue is a value in a request body, met by walkJSON once it is read.
type jsonValue struct {
	path  string // its path (see walkJSON); "" for the body itself
	plain string // its path as encoding/json names it: without array indices
	// start and end are its bytes in the body; first is the end of its
	// first token: its end for a string, number, true, false or null,
	// start+1 for an array or object.
	start, end, first int64
}

// walkJSON walks body, a JSON value of type t (nil when unknown), calling
// key (when not nil) with each key of its objects and value (when not
// nil) with each value, in order, until one of them returns true, which
// it reports. Paths are written as validation errors write them: object
// keys joined by dots (the field's JSON name where the key matches one
// only by case), array elements by their index in brackets
// (steps[1].command), except hops, which connection validation names
// with a dot (ssh_hops.1.host; the CLI and the web UI read them so).
func walkJSON(body []byte, t reflect.Type, key func(jsonKey) bool, value func(jsonValue) bool) bool {
	w := jsonWalk{body: body, dec: json.NewDecoder(bytes.NewReader(body)), key: key, value: value}
	return w.walk(t, "", "")
}

// jsonWalk is the state of walkJSON.
type jsonWalk struct {
	body  []byte
	dec   *json.Decoder
	key   func(jsonKey) bool
	value func(jsonValue) bool
}

// walk reads the next value, of type t at path (plain: without indices),
// and reports whether the walk stopped in it.
func (w *jsonWalk) walk(t reflect.Type, path, plain string) bool {
	before := w.dec.InputOffset()
	tok, err := w.dec.Token()
	if err != nil {
		return false
	}
	v := jsonValue{path: path, plain: plain, first: w.dec.InputOffset()}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && reflect.PointerTo(t).Implements(unmarshalerType) {
		t = nil // it reads its JSON itself: no fields to check
	}
	delim, ok := tok.(json.Delim)
	switch {
	case !ok:
		// The token follows white space and the ',' or ':' before it.
		pre := w.body[before:v.first]
		v.start = before + int64(len(pre)-len(bytes.TrimLeft(pre, " \t\r\n,:")))
	case delim == '{':
		v.start = v.first - 1
		seen := map[string]bool{}
		for w.dec.More() {
			tok, err := w.dec.Token()
			if err != nil {
				return false
			}
			key, _ := tok.(string)
			k := jsonKey{key: key, at: path, again: seen[key]}
			seen[key] = true
			var vt reflect.Type
			vplain := plain // encoding/json names a map's values by the map
			switch {
			case t != nil && t.Kind() == reflect.Struct:
				k.in = t
				vt, k.field, _ = jsonFieldType(t, key)
			case t != nil && t.Kind() == reflect.Map:
				k.in, vt = t, t.Elem()
			}
			if w.key != nil && w.key(k) {
				return true
			}
			vpath := k.path()
			if k.in == nil || k.in.Kind() != reflect.Map {
				name := key
				if k.field != "" {
					name = k.field
				}
				vpath = jsonKey{at: path, key: name}.path()
				vplain = jsonKey{at: plain, key: name}.path()
			}
			if w.walk(vt, vpath, vplain) {
				return true
			}
		}
		_, _ = w.dec.Token() // '}'
	case delim == '[':
		v.start = v.first - 1
		var et reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			et = t.Elem()
		}
		for i := 0; w.dec.More(); i++ {
			if w.walk(et, path+indexText(t, i), plain) {
				return true
			}
		}
		_, _ = w.dec.Token() // ']'
	}
	v.end = w.dec.InputOffset()
	return w.value != nil && w.value(v)
}

// indexText is the path of element i of an array of Go type t: "[1]", or
// ".1" for hops, as connection validation names them (ssh_hops.1.host).
func indexText(t reflect.Type, i int) string {
	if t == reflect.TypeFor[[]HopInput]() {
		return "." + strconv.Itoa(i)
	}
	return "[" + strconv.Itoa(i) + "]"
}

// jsonFieldType returns the type and the JSON name of struct t's field
// that encoding/json fills from key (embedded structs' fields included;
// names compared without regard to case, as encoding/json does), and
// whether there is one.
func jsonFieldType(t reflect.Type, key string) (reflect.Type, string, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		fname, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && fname == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				if ft, name, ok := jsonFieldType(et, key); ok {
					return ft, name, true
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if fname == "" {
			fname = f.Name
		}
		if strings.EqualFold(fname, key) {
			return f.Type, fname, true
		}
	}
	return nil, "", false
}
