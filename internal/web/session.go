package web

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
)

// loginCookie holds a random nonce between showing the sign-in form and
// posting it, so that the form carries a CSRF token before any session
// exists (no other site can sign a browser in with its own token).
const loginCookie = "pgrelay_login"

// maxFormBytes bounds a posted form (CA certificate bundles included).
const maxFormBytes = 1 << 20

// session is the signed-in user of a request.
type session struct {
	Principal *auth.Principal
	// CSRF is the token every form of this session carries.
	CSRF string
	// CSRFField is the name of the form field that carries it.
	CSRFField string
	// cookie is the session cookie's value.
	cookie string
}

// CanWrite reports whether the user may change connections and jobs.
func (s *session) CanWrite() bool { return s != nil && s.Principal.Role.Can(auth.Write) }

// CanRun reports whether the user may start and cancel runs (which open
// connections).
func (s *session) CanRun() bool { return s != nil && s.Principal.Role.Can(auth.Use) }

// CanReplaceHostKey reports whether the session may approve a changed
// host key (admins only).
func (s *session) CanReplaceHostKey() bool {
	return s != nil && s.Principal.Role.Can(auth.ReplaceHostKey)
}

type sessionKey struct{}

func sessionFrom(r *http.Request) *session {
	s, _ := r.Context().Value(sessionKey{}).(*session)
	return s
}

// handler is a page handler that runs for a signed-in user.
type handler func(w http.ResponseWriter, r *http.Request, s *session)

// authed runs h for a signed-in user whose token is still active; other
// requests are sent to the sign-in page. POSTs must also come from this
// origin and carry the session's CSRF token, or they get a 403 page.
func (u *UI) authed(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(auth.SessionCookie)
		if err != nil || c.Value == "" {
			u.toLogin(w, r, "")
			return
		}
		sessionID, err := u.cfg.Sessions.Verify(c.Value)
		if err != nil {
			u.clearCookie(w, auth.SessionCookie, "/")
			u.toLogin(w, r, "expired")
			return
		}
		p, err := u.cfg.App.AuthenticateSession(r.Context(), sessionID)
		if errors.Is(err, app.ErrUnauthenticated) {
			u.clearCookie(w, auth.SessionCookie, "/")
			u.toLogin(w, r, "revoked")
			return
		}
		if err != nil {
			u.serverError(w, r, err)
			return
		}
		s := &session{Principal: p, CSRF: u.cfg.Sessions.CSRFToken(c.Value), CSRFField: auth.CSRFField, cookie: c.Value}
		ctx := context.WithValue(auth.WithPrincipal(r.Context(), p), sessionKey{}, s)
		r = r.WithContext(ctx)
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := u.cop.Check(r); err != nil {
				u.refuseCSRF(w, r, "cross-origin request")
				return
			}
			if !u.cfg.Sessions.CheckCSRF(c.Value, r.PostFormValue(auth.CSRFField)) {
				u.refuseCSRF(w, r, "missing or wrong CSRF token")
				return
			}
		}
		h(w, r, s)
	})
}

// writer runs h only for users who may change connections.
func (u *UI) writer(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		if !s.CanWrite() {
			u.cfg.Logger.InfoContext(r.Context(), "web: write refused to role", "role", s.Principal.Role,
				"token_id", s.Principal.TokenID, "method", r.Method, "path", r.URL.Path)
			u.auditRefused(r, app.RefusedRole)
			u.forbidden(w, r, "Your token has the "+string(s.Principal.Role)+
				" role, which can look at connections but not change them. Ask an admin for an editor token.")
			return
		}
		h(w, r, s)
	}
}

// jobWriter runs h only for users who may change jobs.
func (u *UI) jobWriter(h handler) handler {
	return u.require(auth.Write, "can look at jobs and runs but not change jobs", h)
}

// runner runs h only for users who may start and cancel runs.
func (u *UI) runner(h handler) handler {
	return u.require(auth.Use, "can look at jobs and runs but not start or cancel runs", h)
}

// require runs h only for users whose role allows act; others get a 403
// page that says what their role can do.
func (u *UI) require(act auth.Action, can string, h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		if !s.Principal.Role.Can(act) {
			u.cfg.Logger.InfoContext(r.Context(), "web: request refused to role", "role", s.Principal.Role,
				"action", string(act), "token_id", s.Principal.TokenID, "method", r.Method, "path", r.URL.Path)
			u.auditRefused(r, app.RefusedRole)
			u.forbidden(w, r, "Your token has the "+string(s.Principal.Role)+" role, which "+can+
				". Ask an admin for an editor token.")
			return
		}
		h(w, r, s)
	}
}

// auditRefused records a page request refused to the signed-in user in
// the audit log, by the page's route pattern (never its path, which may
// carry names). Requests without a signed-in user are not recorded.
func (u *UI) auditRefused(r *http.Request, class string) {
	if sessionFrom(r) == nil {
		return
	}
	pattern := r.Pattern
	if _, p, ok := strings.Cut(pattern, " "); ok {
		pattern = p
	}
	if pattern == "" {
		pattern = "(web page)"
	}
	u.cfg.App.AccessRefused(r.Context(), r.Method, pattern, class)
}

func (u *UI) refuseCSRF(w http.ResponseWriter, r *http.Request, why string) {
	u.cfg.Logger.WarnContext(r.Context(), "web: request refused", "reason", why, "path", r.URL.Path)
	u.auditRefused(r, app.RefusedCrossSite)
	u.forbidden(w, r, "This form could not be accepted: it has expired or was sent from another site. Go back, reload the page and try again.")
}

// toLogin sends the browser to the sign-in page, which comes back to this
// page afterwards (for GET requests).
func (u *UI) toLogin(w http.ResponseWriter, r *http.Request, reason string) {
	q := url.Values{}
	if r.Method == http.MethodGet && r.URL.Path != "/" {
		q.Set("next", r.URL.RequestURI())
	}
	if reason != "" {
		q.Set("reason", reason)
	}
	target := "/login"
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// safeNext returns next when it is a path on this site ("/connections/x"),
// else "/". It refuses absolute and scheme-relative URLs ("//evil.example",
// "/\evil.example"), which browsers would follow to another host.
func safeNext(next string) string {
	if next == "" || len(next) > 2048 || next[0] != '/' || strings.HasPrefix(next, "//") ||
		strings.ContainsRune(next, '\\') || strings.ContainsFunc(next, unicode.IsControl) {
		return "/"
	}
	p, err := url.Parse(next)
	if err != nil || p.Scheme != "" || p.Host != "" || p.User != nil || p.Opaque != "" || !strings.HasPrefix(p.Path, "/") {
		return "/"
	}
	if p.Path == "/login" || p.Path == "/logout" {
		return "/"
	}
	return p.RequestURI()
}

// loginData is the data of the sign-in page.
type loginData struct {
	Next      string
	Error     string
	Notice    string
	CSRF      string
	CSRFField string
}

func (u *UI) loginPage(w http.ResponseWriter, r *http.Request) {
	d := loginData{Next: r.URL.Query().Get("next")}
	if u.signedIn(r) {
		http.Redirect(w, r, safeNext(d.Next), http.StatusSeeOther)
		return
	}
	if d.Next != "" && safeNext(d.Next) == "/" {
		d.Next = ""
	}
	switch r.URL.Query().Get("reason") {
	case "revoked":
		d.Notice = "Your session ended because its token was revoked. Sign in with another token."
	case "expired":
		d.Notice = "Your session expired. Sign in again."
	case "signed_out":
		d.Notice = "You are signed out."
	}
	u.renderLogin(w, r, http.StatusOK, d)
}

// signedIn reports whether the request has a valid session of an active
// token.
func (u *UI) signedIn(r *http.Request) bool {
	c, err := r.Cookie(auth.SessionCookie)
	if err != nil {
		return false
	}
	id, err := u.cfg.Sessions.Verify(c.Value)
	if err != nil {
		return false
	}
	_, err = u.cfg.App.AuthenticateSession(r.Context(), id)
	return err == nil
}

// renderLogin shows the sign-in form with a fresh nonce cookie and the
// CSRF token bound to it.
func (u *UI) renderLogin(w http.ResponseWriter, r *http.Request, status int, d loginData) {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	nonce := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: nonce, Path: "/login", MaxAge: 3600,
		HttpOnly: true, Secure: u.secureCookies(), SameSite: http.SameSiteStrictMode})
	d.CSRF = u.cfg.Sessions.CSRFToken("login." + nonce)
	d.CSRFField = auth.CSRFField
	u.render(w, r, status, "login", &page{Title: "Sign in", Data: d})
}

func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := u.cop.Check(r); err != nil {
		u.refuseCSRF(w, r, "cross-origin sign-in")
		return
	}
	next := r.PostFormValue("next")
	d := loginData{Next: next}
	if safeNext(next) == "/" {
		d.Next = ""
	}
	nc, err := r.Cookie(loginCookie)
	if err != nil || !u.cfg.Sessions.CheckCSRF("login."+nc.Value, r.PostFormValue(auth.CSRFField)) {
		d.Error = "The sign-in form expired, or your browser does not keep cookies for this site. Cookies are needed to stay signed in; try again."
		u.renderLogin(w, r, http.StatusForbidden, d)
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	if token == "" {
		d.Error = "Enter an API token."
		u.renderLogin(w, r, http.StatusUnprocessableEntity, d)
		return
	}
	p, err := u.cfg.App.Authenticate(r.Context(), token)
	if errors.Is(err, app.ErrUnauthenticated) {
		u.cfg.Logger.InfoContext(r.Context(), "web: sign-in refused", "reason", "unknown or revoked token", "remote", r.RemoteAddr)
		d.Error = "This token is not valid: it is mistyped, unknown or revoked. Tokens start with " + auth.TokenPrefix + "."
		u.renderLogin(w, r, http.StatusUnauthorized, d)
		return
	}
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	sessionID, err := u.cfg.App.StartSession(r.Context(), p.TokenID, u.cfg.SessionTTL)
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	value := u.cfg.Sessions.Issue(sessionID, u.cfg.SessionTTL)
	http.SetCookie(w, &http.Cookie{Name: auth.SessionCookie, Value: value, Path: "/", MaxAge: int(u.cfg.SessionTTL.Seconds()),
		HttpOnly: true, Secure: u.secureCookies(), SameSite: http.SameSiteStrictMode})
	u.clearCookie(w, loginCookie, "/login")
	u.cfg.Logger.InfoContext(r.Context(), "web: signed in", "token_id", p.TokenID, "token_name", p.Name, "role", p.Role)
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

// logout ends the session on the server, so that the cookie (and any copy
// of it) is refused from now on, and clears it in the browser.
func (u *UI) logout(w http.ResponseWriter, r *http.Request, s *session) {
	u.clearCookie(w, auth.SessionCookie, "/")
	if err := u.cfg.App.EndSession(r.Context(), s.Principal.SessionID); err != nil {
		u.serverError(w, r, err)
		return
	}
	u.cfg.Logger.InfoContext(r.Context(), "web: signed out", "token_id", s.Principal.TokenID)
	http.Redirect(w, r, "/login?reason=signed_out", http.StatusSeeOther)
}

func (u *UI) clearCookie(w http.ResponseWriter, name, path string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: path, MaxAge: -1,
		HttpOnly: true, Secure: u.secureCookies(), SameSite: http.SameSiteStrictMode})
}
