package web

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/elapsed"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
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
	// Back is a link for the way out, "" for the connection list;
	// BackLabel is its text.
	Back, BackLabel string
}

func (u *UI) errorPage(w http.ResponseWriter, r *http.Request, s *session, status int, heading, message string) {
	u.render(w, r, status, "error", &page{Title: heading, Session: s, Data: errorPage{
		Status: status, Heading: heading, Message: message, RequestID: requestid.From(r.Context())}})
}

// errorPageBack is errorPage with a way out other than the connection
// list.
func (u *UI) errorPageBack(w http.ResponseWriter, r *http.Request, status int, heading, message, back, backLabel string) {
	u.render(w, r, status, "error", &page{Title: heading, Session: sessionFrom(r), Data: errorPage{
		Status: status, Heading: heading, Message: message, RequestID: requestid.From(r.Context()),
		Back: back, BackLabel: backLabel}})
}

// serverError logs err with the request's ID and shows a generic page that
// names the ID, never the detail.
func (u *UI) serverError(w http.ResponseWriter, r *http.Request, err error) {
	u.cfg.Logger.ErrorContext(r.Context(), "web: request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	switch {
	case errors.Is(err, app.ErrKeyRotated):
		// The master key was rotated while this server ran: its message
		// (no secret in it) says to restart, as the API's 503 does.
		u.errorPage(w, r, sessionFrom(r), http.StatusServiceUnavailable, "Restart needed", "The "+strings.TrimPrefix(app.ErrKeyRotated.Error(), "the ")+".")
		return
	case errors.Is(err, secret.ErrOpen):
		u.errorPage(w, r, sessionFrom(r), http.StatusServiceUnavailable, "Restart needed",
			"A stored secret cannot be opened with this server's master key. If `pgrelay master-key rotate` ran since the server "+
				"started, restart the server; otherwise the stored value was altered (see the server log under the request ID below).")
		return
	}
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
		"unix":    func(t time.Time) int64 { return t.Unix() },
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
		"stepTitle":       stepTitle,
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
		"timeSec": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return fmtTime(t)
		},
		"clock":         func(t time.Time) string { return t.UTC().Format("15:04:05") },
		"day":           func(t time.Time) string { return t.UTC().Format("2 Jan 2006") },
		"shortReason":   shortReason,
		"ago":           func(t time.Time) string { return ago(u.now(), t) },
		"until":         func(t time.Time) string { return until(u.now(), t) },
		"serverZone":    func() string { return zoneLabel(time.Local, u.now()) },
		"scheduleZone":  func(spec string) string { return scheduleZone(spec, u.now()) },
		"ms":            runDuration,
		"runDuration":   func(r *jobs.Run) string { return runTook(u.now(), r) },
		"statusLabel":   statusLabel,
		"jobURL":        jobURL,
		"auditActor":    auditActorLabel,
		"auditTime":     auditTime,
		"reverseChecks": reverseChecks,
		"checkText":     checkText,
		"intOf":         func(n int64) int { return int(n) },
		"jobAction":     jobAction,
		"jfield":        func(f *jobForm, key string) fieldView { return f.field(key) },
		"cmdline":       cmdline,
		"stepKinds":     stepKinds,
		"nowISO":        func() string { return u.now().UTC().Format(time.RFC3339Nano) },
		"isoTimeMs":     func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"allStatuses":   func() []jobs.Status { return append(runStatuses(), jobs.Skipped) },
		"add":           func(a, b int) int { return a + b },
		"truncate":      truncate,
		"deref":         func(t *time.Time) time.Time { return *t },
		"stepLabel":     stepLabel,
		"testMS":        testMS,
		"testSummary":   testSummary,
		"richText":      richText,
		"noTest":        func() *testView { return nil },
		"rsaBits":       func() int { return sshkey.RSABits },
		"exitCode": func(p *int) string {
			if p == nil {
				return "—"
			}
			return strconv.Itoa(*p)
		},
	}
}

// zoneLabel names the zone loc for a person, with its offset from UTC at
// now: "Europe/Berlin (CET, UTC+01:00 now)", "UTC", or, for a zone known
// only as "Local" (TZ unset, /etc/localtime), "CET (UTC+01:00 now)".
func zoneLabel(loc *time.Location, now time.Time) string {
	abbr, off := now.In(loc).Zone()
	name := loc.String()
	if off == 0 && (name == "UTC" || name == "Local" || name == "" || abbr == "UTC") {
		return "UTC"
	}
	sign := "+"
	if off < 0 {
		sign, off = "-", -off
	}
	utc := fmt.Sprintf("UTC%s%02d:%02d", sign, off/3600, off%3600/60)
	// Zones without an abbreviation of their own have "+0530" or "-03".
	if abbr == "" || abbr[0] == '+' || abbr[0] == '-' || abbr == name {
		abbr = ""
	}
	switch {
	case name == "Local" || name == "":
		if abbr == "" {
			return utc
		}
		return abbr + " (" + utc + " now)"
	case abbr == "":
		return name + " (" + utc + " now)"
	}
	return name + " (" + abbr + ", " + utc + " now)"
}

// scheduleZone is the zone a job's cron schedule is evaluated in, as
// zoneLabel names it: the server process's, unless the schedule names
// its own (CRON_TZ=) or does not depend on one (@every, none).
func scheduleZone(spec string, now time.Time) string {
	spec = strings.TrimSpace(spec)
	if spec == "" || strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") || strings.HasPrefix(spec, "@every ") {
		return ""
	}
	return zoneLabel(time.Local, now)
}

// fmtTime formats a time of a run to the second, in UTC.
func fmtTime(t time.Time) string { return t.UTC().Format("2 Jan 2006, 15:04:05 UTC") }

// ago says how long before now t was: "just now", "5 min ago", "3 h ago",
// "2 days ago", or the date.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 10*time.Second:
		return "just now"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + " s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + " min ago"
	case d < 24*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + " h ago"
	case d < 7*24*time.Hour:
		n := int(d / (24 * time.Hour))
		if n == 1 {
			return "yesterday"
		}
		return strconv.Itoa(n) + " days ago"
	}
	return t.UTC().Format("2 Jan 2006")
}

// until says how long after now t is: "in 40 s", "in 5 min", "in 3 h 20 min".
func until(now, t time.Time) string {
	d := t.Sub(now)
	switch {
	case d < time.Second:
		return "now"
	case d < time.Minute:
		return "in " + strconv.Itoa(int(d/time.Second)) + " s"
	case d < time.Hour:
		return "in " + strconv.Itoa(int(d/time.Minute)) + " min"
	case d < 24*time.Hour:
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 || h >= 10 {
			return "in " + strconv.Itoa(h) + " h"
		}
		return "in " + strconv.Itoa(h) + " h " + strconv.Itoa(m) + " min"
	}
	n := int(d / (24 * time.Hour))
	return "in " + strconv.Itoa(n) + " " + map[bool]string{true: "day", false: "days"}[n == 1]
}

// runDuration formats a run's or a step's duration in milliseconds as
// every face does (package elapsed; the script's fmtDuration).
func runDuration(ms int64) string { return elapsed.FormatMS(float64(ms)) }

// runTook is the duration of a run so far, or "—" before it started.
func runTook(now time.Time, r *jobs.Run) string {
	if r == nil || r.StartedAt == nil {
		return "—"
	}
	return runDuration(r.DurationMS(now))
}

// shortReason is what a list shows of why a run did not succeed: the
// failed step's own error when there is one ("Step 2: ERROR: relation ...
// does not exist"), else the run's reason.
func shortReason(r *jobs.Run) string {
	if r.Status == jobs.Failed {
		for _, st := range r.Steps {
			if st.Status == jobs.Failed && st.Error != "" {
				return "Step " + strconv.Itoa(st.Index+1) + ": " + st.Error
			}
		}
	}
	return r.Reason
}

// statusLabel is the label of a run or step status.
func statusLabel(s jobs.Status) string {
	switch s {
	case jobs.Queued:
		return "Queued"
	case jobs.Running:
		return "Running"
	case jobs.Succeeded:
		return "Succeeded"
	case jobs.Failed:
		return "Failed"
	case jobs.Cancelled:
		return "Cancelled"
	case jobs.Skipped:
		return "Skipped"
	}
	return string(s)
}

// cmdline shows a command as a shell would read it: arguments with
// spaces or quotes are single-quoted.
func cmdline(args []string) string { return jobs.ShellJoin(args) }

// stepKinds names what a job's steps run, each once, in order: "SQL ·
// dbt · psql".
func stepKinds(j jobs.Job) string {
	var seen []string
	for _, st := range j.Steps {
		k := "SQL"
		if len(st.Command) > 0 {
			k = path.Base(st.Command[0])
		}
		if !slices.Contains(seen, k) {
			seen = append(seen, k)
		}
	}
	return strings.Join(seen, " · ")
}

// truncate shortens s to at most n runes, with an ellipsis.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return strings.TrimRight(string(r[:n-1]), " ") + "…"
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
