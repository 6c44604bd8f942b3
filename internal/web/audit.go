package web

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/store"
)

// auditShown is how many records the Audit page lists at a time.
const auditShown = 100

// auditData is the data of the Audit page.
type auditData struct {
	Records []audit.Record
	// Actor, Target, Action and Since are the filter as given.
	Actor, Target, Action, Since string
	// Older is the URL of the next (older) page, "" at the end.
	Older string
	// BadFilter says why a filter value was ignored.
	BadFilter string
	// Verification is the chain's check, when asked for.
	Verification *audit.Verification
}

// Filtered reports whether a filter is set.
func (d *auditData) Filtered() bool {
	return d.Actor != "" || d.Target != "" || d.Action != "" || d.Since != ""
}

// CanAudit reports whether the user may read the audit log.
func (s *session) CanAudit() bool { return s != nil && s.Principal.Role.Can(auth.ReadAudit) }

// auditor runs h only for users who may read the audit log; a refusal is
// recorded in the audit log, as the other roles' refusals are.
func (u *UI) auditor(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		if !s.CanAudit() {
			u.cfg.Logger.InfoContext(r.Context(), "web: audit log refused to role", "role", s.Principal.Role,
				"token_id", s.Principal.TokenID)
			u.auditRefused(r, app.RefusedRole)
			u.forbidden(w, r, "Your token has the "+string(s.Principal.Role)+" role; only admins can read the audit log.")
			return
		}
		h(w, r, s)
	}
}

func (u *UI) auditPage(w http.ResponseWriter, r *http.Request, s *session) {
	q := r.URL.Query()
	d := &auditData{Actor: strings.TrimSpace(q.Get("actor")), Target: strings.TrimSpace(q.Get("target")),
		Action: strings.TrimSpace(q.Get("action")), Since: strings.TrimSpace(q.Get("since"))}
	f := audit.Filter{Actor: d.Actor, Target: d.Target, Action: d.Action, Limit: auditShown}
	if since, err := audit.ParseSince(d.Since, u.now()); err != nil {
		d.BadFilter = "“" + d.Since + "” is not a time, so the list is not filtered by it: give 30m, 24h, 7d or a date such as 2026-01-02."
		d.Since = ""
	} else {
		f.Since = since
	}
	if b, err := strconv.ParseInt(q.Get("before"), 10, 64); err == nil && b > 0 {
		f.BeforeSeq = b
	}
	recs, err := u.cfg.App.ListAudit(r.Context(), f)
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	d.Records = recs
	if len(recs) == auditShown && recs[len(recs)-1].Seq > 1 {
		next := url.Values{}
		for k, v := range map[string]string{"actor": d.Actor, "target": d.Target, "action": d.Action, "since": d.Since} {
			if v != "" {
				next.Set(k, v)
			}
		}
		next.Set("before", strconv.FormatInt(recs[len(recs)-1].Seq, 10))
		d.Older = "/audit?" + next.Encode()
	}
	if q.Get("verify") == "1" {
		v, err := u.cfg.App.VerifyAudit(r.Context())
		if err != nil {
			u.serverError(w, r, err)
			return
		}
		d.Verification = v
	}
	u.render(w, r, http.StatusOK, "audit", &page{Title: "Audit log", Nav: "audit", Session: s, Data: d})
}

// auditActorLabel renders an actor for the page.
func auditActorLabel(a audit.Actor) string {
	switch a.Kind {
	case audit.ActorToken:
		return a.Name
	case audit.ActorLocal:
		return a.Name + " (local)"
	}
	if a.Name == "pgrelay" || a.Name == "" {
		return "pgrelay"
	}
	return "pgrelay " + a.Name
}

// auditTime renders a record's time.
func auditTime(t time.Time) string { return t.UTC().Format("2 Jan 2006, 15:04:05 UTC") }

// reverseChecks returns health entries oldest first (the marks read left
// to right).
func reverseChecks(cs []store.ConnectionCheck) []store.ConnectionCheck {
	out := make([]store.ConnectionCheck, len(cs))
	for i, c := range cs {
		out[len(cs)-1-i] = c
	}
	return out
}

// checkText describes a health entry in a few words.
func checkText(c store.ConnectionCheck) string {
	what := c.Source + " " + c.Kind
	if c.Kind == store.CheckUse {
		what = c.Source
	}
	outcome := "ok"
	switch {
	case !c.OK && c.Kind == store.CheckRun:
		outcome = c.Step
	case !c.OK && c.Step != "":
		outcome = "failed at " + c.Step
	case !c.OK:
		outcome = "failed"
	}
	return what + ", " + outcome + ", " + c.At.UTC().Format("2 Jan 15:04 UTC")
}
