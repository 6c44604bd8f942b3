package api

import (
	"bytes"
	"encoding/json"
	"reflect"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// AuthInput is the auth part of a ConnectionInput: where the database
// password comes from. Its secrets (client_secret, service_account_key)
// are write-only: absent (or null) on update keeps the stored one, as long
// as the kind, the workspace and client (or service account) and the
// endpoint stay; they are never returned (the view says has_client_secret
// / has_service_account_key instead).
type AuthInput struct {
	// Kind is password (the default), command, lakebase or alloydb-iam.
	Kind connection.AuthKind `json:"kind"`

	// Program and Args: command, run without a shell; Timeout bounds a
	// run, Lifetime is how long a token printed without expires_at is
	// valid.
	Program string   `json:"program,omitempty"`
	Args    []string `json:"args,omitempty"`
	Timeout Duration `json:"timeout,omitempty"`

	// WorkspaceURL, ClientID, ClientSecret and Instance or Endpoint:
	// lakebase. Lifetime is the requested lifetime with Endpoint.
	WorkspaceURL string    `json:"workspace_url,omitempty"`
	ClientID     string    `json:"client_id,omitempty"`
	ClientSecret *Password `json:"client_secret,omitempty"`
	Instance     string    `json:"instance,omitempty"`
	Endpoint     string    `json:"endpoint,omitempty"`

	// ServiceAccountKey is the JSON key file of a Google service account
	// (as a string, or the key file's object itself); ServiceAccount is
	// read from it; Scope is the OAuth scope: alloydb-iam.
	ServiceAccountKey *KeyFile `json:"service_account_key,omitempty"`
	ServiceAccount    string   `json:"service_account,omitempty"`
	Scope             string   `json:"scope,omitempty"`

	Lifetime Duration `json:"lifetime,omitempty"`
}

// KeyFile is a write-only JSON key file: a JSON string holding the file,
// or the file's JSON object itself. It never prints.
type KeyFile struct {
	secret.Value
}

// MarshalJSON writes the key file's text as a string: a request must
// carry it.
func (k KeyFile) MarshalJSON() ([]byte, error) { return json.Marshal(k.Reveal()) }

// UnmarshalJSON reads a string or an object. On error it does not echo
// the value.
func (k *KeyFile) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '{' {
		k.Value = secret.New(string(b))
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return &json.UnmarshalTypeError{Value: jsonKind(b), Type: reflect.TypeFor[KeyFile]()}
	}
	k.Value = secret.New(s)
	return nil
}

// newAuthInput returns the input for a spec's auth (nil for none).
func newAuthInput(a *connection.Auth) *AuthInput {
	if a == nil {
		return nil
	}
	in := &AuthInput{Kind: a.Kind, Program: a.Program, Args: a.Args, Timeout: Duration(a.Timeout),
		WorkspaceURL: a.WorkspaceURL, ClientID: a.ClientID, Instance: a.Instance, Endpoint: a.Endpoint,
		ServiceAccount: a.ServiceAccount, Scope: a.Scope, Lifetime: Duration(a.Lifetime)}
	if !a.ClientSecret.IsZero() {
		in.ClientSecret = NewPassword(a.ClientSecret)
	}
	if !a.ServiceAccountKey.IsZero() {
		in.ServiceAccountKey = &KeyFile{Value: a.ServiceAccountKey}
	}
	return in
}

// auth returns the spec's auth of the input (nil for none).
func (in *AuthInput) auth() *connection.Auth {
	if in == nil {
		return nil
	}
	a := &connection.Auth{Kind: in.Kind, Program: in.Program, Args: in.Args, Timeout: connection.Duration(in.Timeout),
		WorkspaceURL: in.WorkspaceURL, ClientID: in.ClientID, Instance: in.Instance, Endpoint: in.Endpoint,
		ServiceAccount: in.ServiceAccount, Scope: in.Scope, Lifetime: connection.Duration(in.Lifetime)}
	if in.ClientSecret != nil {
		a.ClientSecret = in.ClientSecret.Value
	}
	if in.ServiceAccountKey != nil {
		a.ServiceAccountKey = in.ServiceAccountKey.Value
	}
	if a.Kind == connection.AuthPassword || a.Kind == "" {
		// The default: a password kind is kept only with settings of
		// other kinds, for validation to name them.
		b, _ := json.Marshal(a)
		if string(b) == `{"kind":"`+string(a.Kind)+`"}` && a.ClientSecret.IsZero() && a.ServiceAccountKey.IsZero() {
			return nil
		}
	}
	return a
}
