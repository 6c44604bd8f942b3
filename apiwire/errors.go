package apiwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Error codes (ErrorBody.Code).
const (
	CodeInvalidJSON          = "invalid_json"
	CodeInvalidYAML          = "invalid_yaml"
	CodeValidationFailed     = "validation_failed"
	CodeUnauthenticated      = "unauthenticated"
	CodeForbidden            = "forbidden"
	CodeCSRF                 = "csrf"
	CodeNotFound             = "not_found"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeAlreadyExists        = "already_exists"
	CodeConflict             = "conflict"
	CodeTooLarge             = "too_large"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeTooManyStreams       = "too_many_streams"
	CodeInvalid              = "invalid"
	CodeHostKeyChanged       = "host_key_changed"
	CodeKeyNotAuthorized     = "key_not_authorized"
	CodeBastionError         = "bastion_error"
	CodeDatabaseError        = "database_error"
	CodeNetworkDenied        = "network_denied"
	CodeUnavailable          = "unavailable"
	CodeTimeout              = "timeout"
	CodeInternal             = "internal"
)

// ErrorResponse is the body of every error response.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody describes the error.
type ErrorBody struct {
	// Code is one of the Code constants; programs branch on it.
	Code string `json:"code"`
	// Message says what failed and what to do, for people.
	Message string `json:"message"`
	// Fields maps a request field (JSON path, e.g. "ssh_tunnel.port") to
	// its problem.
	Fields Fields `json:"fields,omitempty"`
	// RequestID identifies the request in the server log.
	RequestID string `json:"request_id,omitempty"`
	// DatabaseError is the database server's error, for database_error.
	DatabaseError *DatabaseError `json:"database_error,omitempty"`
}

// DatabaseError is an error reported by the database server.
type DatabaseError struct {
	Severity string `json:"severity"`
	SQLState string `json:"sqlstate"`
	Message  string `json:"message"`
	Detail   string `json:"detail,omitempty"`
	Hint     string `json:"hint,omitempty"`
	// Position is the 1-based character position of the error in the SQL,
	// or 0.
	Position int32 `json:"position,omitempty"`
}

// FieldError is one problem with one request field.
type FieldError struct {
	Field   string `json:"field"`
	Problem string `json:"problem"`
}

// Fields is a list of field problems that reads and writes JSON as an
// object {field: problem}, keeping the order of the problems.
type Fields []FieldError

// MarshalJSON writes the problems as an object in their order.
func (f Fields) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, p := range f {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(p.Field)
		v, _ := json.Marshal(p.Problem)
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads an object {field: problem} in its order.
func (f *Fields) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("fields: expected a JSON object")
	}
	var out Fields
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("fields: %w", err)
		}
		k, _ := t.(string)
		var v string
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("fields.%s: %w", k, err)
		}
		out = append(out, FieldError{Field: k, Problem: v})
	}
	*f = out
	return nil
}

// Map returns the problems as a map from field to problem.
func (f Fields) Map() map[string]string {
	m := make(map[string]string, len(f))
	for _, p := range f {
		m[p.Field] = p.Problem
	}
	return m
}

// MarshalJSON writes the duration as a string such as "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "30s"-style strings or a number of seconds; null
// leaves the duration unchanged.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return errors.New(`duration must be a string such as "30s" or a number of seconds`)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}
