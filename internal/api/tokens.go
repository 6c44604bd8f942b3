package api

import (
	"net/http"
	"net/url"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
)

// TokenCreateRequest is the body of POST /tokens.
type TokenCreateRequest struct {
	// Name identifies the token in lists and logs: 1 to 63 letters, digits,
	// '.', '_', '@' and '-'.
	Name string `json:"name"`
	// Role is admin, editor or viewer.
	Role auth.Role `json:"role"`
}

// TokenList is the body of GET /tokens.
type TokenList struct {
	Tokens []app.TokenView `json:"tokens"`
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request) error {
	ts, err := a.cfg.App.ListTokens(r.Context())
	if err != nil {
		return err
	}
	if ts == nil {
		ts = []app.TokenView{}
	}
	return writeJSON(w, http.StatusOK, TokenList{Tokens: ts})
}

func (a *API) createToken(w http.ResponseWriter, r *http.Request) error {
	var in TokenCreateRequest
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	nt, err := a.cfg.App.CreateToken(r.Context(), in.Name, in.Role)
	if err != nil {
		return err
	}
	w.Header().Set("Location", Prefix+"/tokens/"+url.PathEscape(nt.ID))
	return writeJSON(w, http.StatusCreated, nt)
}

func (a *API) revokeToken(w http.ResponseWriter, r *http.Request) error {
	tv, err := a.cfg.App.RevokeToken(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, tv)
}
