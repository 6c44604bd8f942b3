package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/pgrelay/pgrelay/internal/grants"
)

// GrantsRequest is the body of POST /connections/{name}/grants.
type GrantsRequest = grants.Request

// GrantsResponse is the body of POST /connections/{name}/grants: the
// audit's checks and the statements that grant what is missing, plus a
// summary.
type GrantsResponse struct {
	// Connection is the audited connection's name.
	Connection string `json:"connection"`
	grants.Result
	// OK is true when nothing is missing and every check could be made.
	OK bool `json:"ok"`
	// Missing counts the checks that are missing or not found.
	Missing int `json:"missing"`
	// SQL is the statements as one script, each with its reason as a
	// comment above it (what `pgrelay grants -o sql` prints).
	SQL string `json:"sql"`
}

// NewGrantsResponse returns the response for the audit of a connection.
func NewGrantsResponse(name string, res *grants.Result) GrantsResponse {
	return GrantsResponse{Connection: name, Result: *res, OK: res.OK(), Missing: res.Missing(), SQL: res.SQL()}
}

// grantsAudit audits the privileges of the connection's user (or the
// request's role). A role that lacks privileges is a 200 whose checks say
// so; errors are for requests that cannot be audited.
func (a *API) grantsAudit(w http.ResponseWriter, r *http.Request) error {
	var in GrantsRequest
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if in.TargetSchema != "" && strings.TrimSpace(in.TargetSchema) == "" {
		return fieldError(http.StatusBadRequest, CodeValidationFailed, "target_schema",
			"only white space: give the schema the dbt run writes to, or leave it out for the connection's schema")
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.QueryTimeout)
	defer cancel()
	name := r.PathValue("name")
	res, err := a.cfg.App.Grants(ctx, name, in)
	switch {
	case err != nil && r.Context().Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &apiError{status: http.StatusGatewayTimeout, code: CodeTimeout,
			message: fmt.Sprintf("the audit did not finish within %s and was stopped", a.cfg.QueryTimeout)}
	case err != nil:
		return err
	}
	return writeJSON(w, http.StatusOK, NewGrantsResponse(name, res))
}
