package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// listData is the data of the connection list.
type listData struct {
	Connections []*app.ConnectionView
	// Pending counts connections whose bastion host key changed.
	Pending int
}

func (u *UI) list(w http.ResponseWriter, r *http.Request, s *session) {
	cs, err := u.cfg.App.ListConnections(r.Context())
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	d := listData{Connections: cs}
	for _, c := range cs {
		for _, h := range c.SSHHops {
			if h.PendingHostKeyFingerprint != "" {
				d.Pending++
				break
			}
		}
	}
	p := &page{Title: "Connections", Nav: "connections", Session: s, Data: d}
	if name := r.URL.Query().Get("deleted"); name != "" && connection.ValidateName(name) == nil {
		p.Flash = &flash{Kind: "success", Title: "Connection deleted",
			Message: "“" + name + "” and its keys are gone. If it used a bastion, remove its line from the bastion's authorized_keys."}
	}
	u.render(w, r, http.StatusOK, "list", p)
}

// showData is the data of the connection page.
type showData struct {
	C *app.ConnectionView
	// showHops holds the chain's lines, a key rotation and the SSH CA.
	showHops
	// Restricted is the authorized_keys line limited to forwarding to the
	// database ("" without a tunnel).
	Restricted string
	// SetupScript is the bastion setup script ("" without a tunnel).
	SetupScript string
	// CACerts counts the certificates of the CA bundle.
	CACerts int
	// JustCreated shows the "install the key" guidance first.
	JustCreated bool
	// Rotated shows the old key to remove.
	Rotated bool
	// TrustError is why approving a host key failed.
	TrustError string
	// Test is the report of a test run without the script, or nil.
	Test *testView
}

// SetupCollapsed reports whether the bastion setup guide starts closed:
// once the bastion has accepted this key (an SSH login with it succeeded;
// a pinned host key only says that the handshake got that far) and no new
// key waits to be installed.
func (d *showData) SetupCollapsed() bool {
	t := d.C.SSHTunnel
	return t != nil && !d.JustCreated && !d.Rotated && t.KeyUsedAt != nil
}

// OldKey is the authorized_keys line of the key replaced by the last
// rotation, as it was shown (with its comment), or "".
func (d *showData) OldKey() string {
	t := d.C.SSHTunnel
	if t == nil || t.PreviousPublicKey == "" {
		return ""
	}
	if len(strings.Fields(t.PreviousPublicKey)) == 2 {
		return t.PreviousPublicKey + " " + sshkey.Comment(d.C.Name)
	}
	return t.PreviousPublicKey
}

func (u *UI) loadShow(r *http.Request, name string) (*showData, error) {
	ctx := r.Context()
	c, err := u.cfg.App.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	d := &showData{C: c}
	if c.SSLRootCert != "" {
		if certs, err := connection.ParseCertificates(c.SSLRootCert); err == nil {
			d.CACerts = len(certs)
		}
	}
	if c.SSHTunnel != nil {
		if d.Restricted, err = u.cfg.App.PublicKey(ctx, name, true); err != nil {
			return nil, err
		}
		if d.SetupScript, err = u.cfg.App.BastionSetup(ctx, name); err != nil && !errors.Is(err, app.ErrNotFound) {
			return nil, err
		}
		if err := u.loadHops(r, d); err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (u *UI) show(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	d, err := u.loadShow(r, name)
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	p := &page{Title: name, Nav: "connections", Session: s, Data: d}
	q := r.URL.Query()
	switch {
	case q.Has("created"):
		d.JustCreated = d.C.SSHTunnel != nil
		msg := "pgrelay reaches it directly."
		if d.JustCreated {
			msg = "One step left: install its public key on the bastion, as shown below."
		}
		p.Flash = &flash{Kind: "success", Title: "Connection saved", Message: msg}
	case q.Has("saved"):
		p.Flash = &flash{Kind: "success", Title: "Changes saved"}
	case q.Has("rotated"):
		d.Rotated = true
		p.Flash = &flash{Kind: "success", Title: "New key pair generated",
			Message: "Add the new public key to the bastion, then remove the old one shown below. The tunnel uses the new key from now on."}
	case q.Has("rotation"):
		p.Flash = rotationFlash(q.Get("rotation"))
	case q.Has("trusted"):
		p.Flash = &flash{Kind: "success", Title: "New host key approved",
			Message: "pgrelay now accepts the bastion's new host key and refuses any other."}
	}
	u.render(w, r, http.StatusOK, "show", p)
}

// setupScript serves the bastion setup script as a download.
func (u *UI) setupScript(w http.ResponseWriter, r *http.Request, _ *session) {
	name := r.PathValue("name")
	script, err := u.cfg.App.BastionSetup(r.Context(), name)
	if errors.Is(err, app.ErrInvalid) {
		u.errorPage(w, r, sessionFrom(r), http.StatusNotFound, "No bastion setup",
			"Connection “"+name+"” does not use an SSH tunnel, so there is no bastion to set up.")
		return
	}
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	setHeaders(w)
	w.Header().Set("Content-Type", "text/x-shellscript; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="pgrelay-bastion-setup-%s.sh"`, name))
	_, _ = w.Write([]byte(script))
}

// formData is the data of the create/edit page.
type formData struct {
	Form *connForm
}

func (u *UI) renderForm(w http.ResponseWriter, r *http.Request, s *session, status int, f *connForm) {
	title := "New connection"
	if f.Edit {
		title = "Edit " + f.Name
	}
	u.render(w, r, status, "form", &page{Title: title, Nav: "connections", Session: s, Data: formData{Form: f}})
}

func (u *UI) newForm(w http.ResponseWriter, r *http.Request, s *session) {
	u.renderForm(w, r, s, http.StatusOK, blankForm())
}

func (u *UI) editForm(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	c, err := u.cfg.App.GetConnection(r.Context(), name)
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	u.renderForm(w, r, s, http.StatusOK, formFromView(c))
}

func (u *UI) create(w http.ResponseWriter, r *http.Request, s *session) {
	pf, err := parseConnForm(r, false, "")
	if err != nil {
		u.errorPage(w, r, s, http.StatusBadRequest, "Form not readable", "The form could not be read. Reload the page and try again.")
		return
	}
	if u.handleHopAction(w, r, s, pf) {
		return
	}
	if len(pf.form.Errors) > 0 {
		pf.validate()
		u.renderForm(w, r, s, http.StatusUnprocessableEntity, pf.form)
		return
	}
	c, err := u.cfg.App.CreateConnection(r.Context(), pf.spec)
	if u.formError(w, r, s, pf, err) {
		return
	}
	http.Redirect(w, r, "/connections/"+url.PathEscape(c.Name)+"?created=1", http.StatusSeeOther)
}

func (u *UI) update(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	old, err := u.cfg.App.GetConnection(r.Context(), name)
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	pf, err := parseConnForm(r, true, name)
	if err != nil {
		u.errorPage(w, r, s, http.StatusBadRequest, "Form not readable", "The form could not be read. Reload the page and try again.")
		return
	}
	pf.form.HasPassword = old.HasPassword
	if a := old.Auth; a != nil {
		pf.form.Stored = authSecretsStored{ClientSecret: a.HasClientSecret, ServiceAccountKey: a.HasServiceAccountKey}
	}
	if old.SSHTunnel != nil {
		pf.form.PinnedHostKey = old.SSHTunnel.HostKeyFingerprint
	}
	if u.handleHopAction(w, r, s, pf) {
		return
	}
	if len(pf.form.Errors) > 0 {
		pf.validate()
		u.renderForm(w, r, s, http.StatusUnprocessableEntity, pf.form)
		return
	}
	c, err := u.cfg.App.UpdateConnection(r.Context(), name, pf.spec, pf.password)
	if u.formError(w, r, s, pf, err) {
		return
	}
	http.Redirect(w, r, "/connections/"+url.PathEscape(c.Name)+"?saved=1", http.StatusSeeOther)
}

// formError shows the form again for a validation problem or a name that
// is taken, and the fitting error page for anything else. It reports
// whether there was an error.
func (u *UI) formError(w http.ResponseWriter, r *http.Request, s *session, pf *parsedForm, err error) bool {
	if err == nil {
		return false
	}
	var ve *app.ValidationError
	status := http.StatusUnprocessableEntity
	switch {
	case errors.As(err, &ve):
		pf.form.addProblems(ve.Fields())
	case errors.Is(err, app.ErrExists):
		pf.form.addProblems(map[string]string{"name": fmt.Sprintf(
			"a connection named %q already exists: choose another name, or edit that one", pf.spec.Name)})
	case errors.Is(err, app.ErrConflict):
		pf.form.addProblems(map[string]string{"form": "someone else changed this connection meanwhile: reload the page to see their changes, then edit again"})
	case errors.Is(err, app.ErrForbidden):
		status = http.StatusForbidden
		pf.form.addProblems(map[string]string{"form": strings.TrimPrefix(err.Error(), app.ErrForbidden.Error()+": ")})
	default:
		u.appError(w, r, pf.form.Name, err)
		return true
	}
	u.renderForm(w, r, s, status, pf.form)
	return true
}

// deleteData is the data of the delete confirmation page.
type deleteData struct {
	C     *app.ConnectionView
	Error string
	Typed string
}

func (u *UI) deletePage(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	c, err := u.cfg.App.GetConnection(r.Context(), name)
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	u.render(w, r, http.StatusOK, "delete", &page{Title: "Delete " + name, Nav: "connections", Session: s, Data: deleteData{C: c}})
}

func (u *UI) deleteConnection(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	typed := strings.TrimSpace(r.PostFormValue("confirm"))
	if typed != name {
		c, err := u.cfg.App.GetConnection(r.Context(), name)
		if err != nil {
			u.appError(w, r, name, err)
			return
		}
		msg := "Type the connection's name, " + name + ", to confirm."
		if typed != "" {
			msg = fmt.Sprintf("%q is not the connection's name: type %s to confirm.", typed, name)
		}
		u.render(w, r, http.StatusUnprocessableEntity, "delete", &page{Title: "Delete " + name, Nav: "connections", Session: s,
			Data: deleteData{C: c, Error: msg, Typed: typed}})
		return
	}
	if err := u.cfg.App.DeleteConnection(r.Context(), name); err != nil {
		u.appError(w, r, name, err)
		return
	}
	http.Redirect(w, r, "/connections?deleted="+url.QueryEscape(name), http.StatusSeeOther)
}

func (u *UI) rotatePage(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	c, err := u.cfg.App.GetConnection(r.Context(), name)
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	if c.SSHTunnel == nil {
		u.errorPage(w, r, s, http.StatusNotFound, "No key to rotate", "Connection “"+name+"” does not use an SSH tunnel, so it has no key pair.")
		return
	}
	u.render(w, r, http.StatusOK, "rotate", &page{Title: "Rotate key of " + name, Nav: "connections", Session: s, Data: showData{C: c}})
}

func (u *UI) rotateKey(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	_, err := u.cfg.App.RotateKey(r.Context(), name)
	if errors.Is(err, app.ErrInvalid) {
		u.errorPage(w, r, s, http.StatusConflict, "No key to rotate", "Connection “"+name+"” does not use an SSH tunnel, so it has no key pair.")
		return
	}
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	http.Redirect(w, r, "/connections/"+url.PathEscape(name)+"?rotated=1", http.StatusSeeOther)
}

func (u *UI) trustHostKey(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	_, err := u.cfg.App.TrustHostKey(r.Context(), name, r.PostFormValue("fingerprint"))
	var ve *app.ValidationError
	if errors.Is(err, app.ErrInvalid) || errors.Is(err, app.ErrForbidden) || errors.As(err, &ve) {
		d, lerr := u.loadShow(r, name)
		if lerr != nil {
			u.appError(w, r, name, lerr)
			return
		}
		status := http.StatusConflict
		d.TrustError = strings.TrimPrefix(err.Error(), app.ErrInvalid.Error()+": ")
		if errors.Is(err, app.ErrForbidden) {
			status, d.TrustError = http.StatusForbidden, strings.TrimPrefix(err.Error(), app.ErrForbidden.Error()+": ")
		}
		if ve != nil && len(ve.Problems) > 0 {
			d.TrustError = ve.Problems[0].Problem
		}
		u.render(w, r, status, "show", &page{Title: name, Nav: "connections", Session: s, Data: d})
		return
	}
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	http.Redirect(w, r, "/connections/"+url.PathEscape(name)+"?trusted=1", http.StatusSeeOther)
}

// endpoint formats host:port/database, with IPv6 hosts in brackets.
func endpoint(c *app.ConnectionView) string {
	h := c.Host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	return h + ":" + strconv.Itoa(c.Port) + "/" + c.Database
}

// bastion formats user@host:port of a tunnel.
func bastion(t *app.TunnelView) string {
	h := t.Host
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	return t.User + "@" + h + ":" + strconv.Itoa(t.Port)
}
