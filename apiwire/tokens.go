package apiwire

import "time"

// TokenCreateRequest is the body of POST /tokens.
type TokenCreateRequest struct {
	// Name identifies the token in lists and logs.
	Name string `json:"name"`
	// Role is admin, editor or viewer.
	Role string `json:"role"`
}

// TokenView is what the API shows of a token (never the token).
type TokenView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

// NewToken is a created token, shown once.
type NewToken struct {
	TokenView
	Token string `json:"token"`
}

// TokenList is the body of GET /tokens.
type TokenList struct {
	Tokens []TokenView `json:"tokens"`
}

// WhoAmI is the body of GET /whoami.
type WhoAmI struct {
	TokenID string `json:"token_id"`
	Name    string `json:"name"`
	Role    string `json:"role"`
	// Actions lists what the role may do: read, write, use, manage_tokens.
	Actions []string `json:"actions"`
}
