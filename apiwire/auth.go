package apiwire

import "time"

// AuthInput says where a connection's password comes from (the auth
// object of a ConnectionInput); absent means the stored password. Its
// secrets are write-only.
type AuthInput struct {
	// Kind is password (the default), command, lakebase or alloydb-iam.
	Kind string `json:"kind"`
	// Program and Args (command) run without a shell; Timeout bounds a
	// run; Lifetime is how long a token printed without expires_at (or a
	// Lakebase endpoint's token) is valid.
	Program string   `json:"program,omitempty"`
	Args    []string `json:"args,omitempty"`
	Timeout Duration `json:"timeout,omitempty"`
	// WorkspaceURL, ClientID, ClientSecret and Instance or Endpoint:
	// lakebase.
	WorkspaceURL string  `json:"workspace_url,omitempty"`
	ClientID     string  `json:"client_id,omitempty"`
	ClientSecret *Secret `json:"client_secret,omitempty"`
	Instance     string  `json:"instance,omitempty"`
	Endpoint     string  `json:"endpoint,omitempty"`
	// ServiceAccountKey is the JSON key file of a Google service account,
	// as a string; ServiceAccount is read from it; Scope is the OAuth
	// scope: alloydb-iam.
	ServiceAccountKey *Secret  `json:"service_account_key,omitempty"`
	ServiceAccount    string   `json:"service_account,omitempty"`
	Scope             string   `json:"scope,omitempty"`
	Lifetime          Duration `json:"lifetime,omitempty"`
}

// AuthView is the auth part of a ConnectionView: the settings without the
// secrets, whether a secret is stored, and the current token's state.
type AuthView struct {
	Kind           string   `json:"kind"`
	Program        string   `json:"program,omitempty"`
	Args           []string `json:"args,omitempty"`
	Timeout        Duration `json:"timeout,omitempty"`
	WorkspaceURL   string   `json:"workspace_url,omitempty"`
	ClientID       string   `json:"client_id,omitempty"`
	Instance       string   `json:"instance,omitempty"`
	Endpoint       string   `json:"endpoint,omitempty"`
	ServiceAccount string   `json:"service_account,omitempty"`
	Scope          string   `json:"scope,omitempty"`
	Lifetime       Duration `json:"lifetime,omitempty"`
	// HasClientSecret: a Lakebase OAuth client secret is stored.
	HasClientSecret bool `json:"has_client_secret,omitempty"`
	// HasServiceAccountKey: an AlloyDB service-account key is stored.
	HasServiceAccountKey bool `json:"has_service_account_key,omitempty"`
	// Token is the state of the token the server holds for the
	// connection; nil when it has fetched none yet.
	Token *TokenStatus `json:"token,omitempty"`
}

// TokenStatus is the state of a connection's current token (never the
// token).
type TokenStatus struct {
	Source      string    `json:"source"`
	Kind        string    `json:"kind"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	FetchedAt   time.Time `json:"fetched_at,omitzero"`
	RefreshAt   time.Time `json:"refresh_at,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Fetches     int       `json:"fetches"`
}
