package api

import (
	"math"
	"net/http"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
)

// AuditList is the body of GET /audit: records newest first. NextBefore,
// when set, is the before_seq of the next (older) page.
type AuditList struct {
	Records    []audit.Record `json:"records"`
	NextBefore int64          `json:"next_before,omitempty"`
}

// auditFilter reads the audit filter of a request's query: since, actor,
// target, action, before_seq and limit.
func auditFilter(r *http.Request) (audit.Filter, error) {
	q := r.URL.Query()
	f := audit.Filter{Actor: q.Get("actor"), Target: q.Get("target"), Action: q.Get("action")}
	var err error
	if f.Since, err = audit.ParseSince(q.Get("since"), time.Now()); err != nil {
		return f, fieldError(http.StatusBadRequest, CodeValidationFailed, "since", err.Error())
	}
	if f.BeforeSeq, err = intParam(r, "before_seq", 0, 0, math.MaxInt64); err != nil {
		return f, err
	}
	limit, err := intParam(r, "limit", audit.DefaultLimit, 1, audit.MaxLimit)
	if err != nil {
		return f, err
	}
	f.Limit = int(limit)
	return f, nil
}

func (a *API) listAudit(w http.ResponseWriter, r *http.Request) error {
	f, err := auditFilter(r)
	if err != nil {
		return err
	}
	recs, err := a.cfg.App.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	out := AuditList{Records: recs}
	if len(recs) == f.Limit && recs[len(recs)-1].Seq > 1 {
		out.NextBefore = recs[len(recs)-1].Seq
	}
	return writeJSON(w, http.StatusOK, out)
}

func (a *API) verifyAudit(w http.ResponseWriter, r *http.Request) error {
	v, err := a.cfg.App.VerifyAudit(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}

// exportAudit streams the records after after_seq (and at or after
// since) as JSON lines, oldest first, for a SIEM: each line carries its
// seq, whose last value is the after_seq of the next export.
func (a *API) exportAudit(w http.ResponseWriter, r *http.Request) error {
	after, err := intParam(r, "after_seq", 0, 0, math.MaxInt64)
	if err != nil {
		return err
	}
	since, err := audit.ParseSince(r.URL.Query().Get("since"), time.Now())
	if err != nil {
		return fieldError(http.StatusBadRequest, CodeValidationFailed, "since", err.Error())
	}
	// Refused before the status is sent, as a 400 of after_seq.
	if err := a.cfg.App.CheckAuditCursor(r.Context(), after); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if _, err := a.cfg.App.ExportAudit(r.Context(), w, after, since); err != nil {
		// The status is sent: the stream ends short, and the log says why.
		a.log.ErrorContext(r.Context(), "audit export ended early", "error", err)
		return nil
	}
	return nil
}
