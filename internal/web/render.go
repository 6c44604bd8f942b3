package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/requestid"
)

// contentSecurityPolicy allows nothing but this origin's own files: no
// inline scripts or styles, no frames, forms only to this origin.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// page is what every template receives.
type page struct {
	// Title is the document title (before " · pgrelay").
	Title string
	// Nav names the active navigation entry.
	Nav string
	// Session is the signed-in user, nil on pages shown without one.
	Session *session
	// Flash is a one-off message at the top of the page.
	Flash *flash
	// Data is the page's own data.
	Data any
}

// flash is a message shown once at the top of a page.
type flash struct {
	// Kind is success, info, warning or danger.
	Kind    string
	Title   string
	Message string
}

// setHeaders sets the security headers of every UI response.
func setHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// render executes a page template into a buffer first, so that a template
// error becomes a clean error page instead of half a page.
func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, name string, p *page) {
	t, ok := u.pages[name]
	if !ok {
		u.serverError(w, r, errors.New("no template "+name))
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout.html", p); err != nil {
		if name == "error" {
			// Avoid a loop: the error page itself failed.
			u.cfg.Logger.ErrorContext(r.Context(), "web: render error page", "error", err)
			setHeaders(w)
			http.Error(w, "internal error; see the server log for request "+requestid.From(r.Context()), http.StatusInternalServerError)
			return
		}
		u.serverError(w, r, err)
		return
	}
	setHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// errorPage is the data of the error page.
type errorPage struct {
	Status    int
	Heading   string
	Message   string
	RequestID string
	// Back is a link for the way out, "" for the connection list.
	Back string
}

func (u *UI) errorPage(w http.ResponseWriter, r *http.Request, s *session, status int, heading, message string) {
	u.render(w, r, status, "error", &page{Title: heading, Session: s, Data: errorPage{
		Status: status, Heading: heading, Message: message, RequestID: requestid.From(r.Context())}})
}

// serverError logs err with the request's ID and shows a generic page that
// names the ID, never the detail.
func (u *UI) serverError(w http.ResponseWriter, r *http.Request, err error) {
	u.cfg.Logger.ErrorContext(r.Context(), "web: request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	u.errorPage(w, r, sessionFrom(r), http.StatusInternalServerError, "Something went wrong",
		"pgrelay could not complete this request. The details are in the server log under the request ID below; try again, and if it keeps happening, pass the ID to whoever runs pgrelay.")
}

func (u *UI) notFound(w http.ResponseWriter, r *http.Request) {
	u.errorPage(w, r, sessionFrom(r), http.StatusNotFound, "Page not found",
		"There is nothing at this address. It may have been deleted, or the link is mistyped.")
}

func (u *UI) connectionNotFound(w http.ResponseWriter, r *http.Request, name string) {
	u.errorPage(w, r, sessionFrom(r), http.StatusNotFound, "Connection not found",
		"There is no connection named “"+name+"”. It may have been deleted by someone else.")
}

func (u *UI) forbidden(w http.ResponseWriter, r *http.Request, message string) {
	u.errorPage(w, r, sessionFrom(r), http.StatusForbidden, "Not allowed", message)
}

// appError shows the page that fits an error of a use case on connection
// name: 404 when it does not exist, else a generic 500.
func (u *UI) appError(w http.ResponseWriter, r *http.Request, name string, err error) {
	switch {
	case errors.Is(err, app.ErrNotFound):
		u.connectionNotFound(w, r, name)
	case errors.Is(err, app.ErrConflict):
		u.errorPage(w, r, sessionFrom(r), http.StatusConflict, "Changed by someone else",
			"This connection changed while you were working on it. Go back, reload it and try again.")
	default:
		u.serverError(w, r, err)
	}
}

func (u *UI) templateFuncs() template.FuncMap {
	return template.FuncMap{
		"asset": u.assetURL,
		"flavorLabel": func(f connection.Flavor) string {
			return f.Label()
		},
		"time": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2 Jan 2006, 15:04 UTC")
		},
		"isoTime": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"field":   func(f *connForm, key string) fieldView { return f.field(key) },
		"dict":    dict,
		"copybox": func(id, label, value string, rows int, describe string) copyBox {
			return copyBox{ID: id, Label: label, Value: value, Rows: rows, Describe: describe}
		},
		"endpoint":        endpoint,
		"bastion":         bastion,
		"dbPlaceholder":   databasePlaceholder,
		"hostPlaceholder": hostPlaceholder,
		"setupSteps":      setupSteps,
		"deadAfter": func(t *app.TunnelView) string {
			return humanDuration(t.KeepaliveInterval.Duration() * time.Duration(t.KeepaliveCountMax))
		},
		"human": func(d connection.Duration) string { return humanDuration(d.Duration()) },
		"flavorShort": func(f connection.Flavor) string {
			if f == connection.Lakebase {
				return "Lakebase"
			}
			return f.Label()
		},
		"wbr": wbr,
		"initial": func(s string) string {
			for _, r := range s {
				return strings.ToUpper(string(r))
			}
			return "?"
		},
		"plural": func(n int, one, many string) string {
			if n == 1 {
				return one
			}
			return many
		},
	}
}

// copyBox is a read-only text with a Copy button.
type copyBox struct {
	ID, Label, Value string
	Rows             int
	// Describe is the id of the element that describes the box, or "".
	Describe string
}

// dict builds a map from alternating keys and values, to pass several
// values to a template.
func dict(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, errors.New("dict: odd number of arguments")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, fmt.Errorf("dict: key %v is not a string", kv[i])
		}
		m[k] = kv[i+1]
	}
	return m, nil
}

// setupSteps are the commands that prepare the tunnel user on a bastion,
// as the hosted product's guide lists them.
func setupSteps(user string) string {
	return fmt.Sprintf(`sudo groupadd %[1]s
sudo useradd -m -g %[1]s %[1]s
sudo su - %[1]s
mkdir ~/.ssh
chmod 700 ~/.ssh
touch ~/.ssh/authorized_keys
chmod 600 ~/.ssh/authorized_keys`, user)
}

// humanDuration formats d for people: "30 s", "5 min", "1 h 30 min".
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.String()
	case d < time.Minute || d%time.Minute != 0 && d < 10*time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
	case d < time.Hour:
		return strconv.FormatFloat(d.Minutes(), 'f', -1, 64) + " min"
	}
	h := d / time.Hour
	m := (d % time.Hour).Round(time.Minute) / time.Minute
	if m == 0 {
		return strconv.Itoa(int(h)) + " h"
	}
	return strconv.Itoa(int(h)) + " h " + strconv.Itoa(int(m)) + " min"
}

// wbr escapes s and lets the browser break it after any of the runes in
// after, so that long host names wrap at sensible places.
func wbr(s, after string) template.HTML {
	var b strings.Builder
	for _, r := range s {
		b.WriteString(template.HTMLEscapeString(string(r)))
		if strings.ContainsRune(after, r) {
			b.WriteString("<wbr>")
		}
	}
	return template.HTML(b.String()) // every rune is escaped above
}
