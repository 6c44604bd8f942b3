package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// Chains of SSH hops on the connection form: the first hop is the bastion's
// fields (ssh_tunnel.host, .port, .user); each further hop has fields
// ssh_hops.N.host, .port, .user and the own_key checkbox (N from 1, its
// place in the chain minus one, as the API numbers ssh_hops). Buttons named hop_action add, remove
// and move hops: the form comes back with the chain changed, nothing
// saved, so that they work without the script.

// fieldHopAction is the name of the hop buttons.
const fieldHopAction = "hop_action"

// maxFormHops bounds the hops a posted form is read for.
const maxFormHops = connection.MaxHops

// hopKey is the form field key of hop i's part (i from 0).
func hopKey(i int, part string) string {
	if i == 0 {
		return "ssh_tunnel." + part
	}
	return fmt.Sprintf("ssh_hops.%d.%s", i, part)
}

// hopLabel labels the fields of hops after the first: "Hop 2 host".
func hopLabel(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "ssh_hops.")
	if !ok {
		return "", false
	}
	n, part, _ := strings.Cut(rest, ".")
	i, err := strconv.Atoi(n)
	if err != nil {
		return "SSH hops", true
	}
	return fmt.Sprintf("Hop %d %s", i+1, strings.ReplaceAll(part, "_", " ")), true
}

// HopPlaces are the places (from 1) of the hops after the first, for the
// template.
func (f *connForm) HopPlaces() []int {
	out := make([]int, f.ExtraHops)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

// HopsOpen reports whether the chain settings start open.
func (f *connForm) HopsOpen() bool {
	if f.ExtraHops > 0 || f.Values["ssh_tunnel.proxy_command"] != "" || f.Values["ssh_tunnel.host_authorities"] != "" ||
		(f.Values["ssh_tunnel.auth"] != "" && f.Values["ssh_tunnel.auth"] != string(connection.SSHAuthKey)) {
		return true
	}
	for k := range f.Errors {
		if strings.HasPrefix(k, "ssh_hops") || k == "ssh_tunnel.proxy_command" || k == "ssh_tunnel.auth" || k == "ssh_tunnel.host_authorities" {
			return true
		}
	}
	return false
}

// readHops reads the fields of the hops after the first and of the chain
// settings from a posted form.
func (f *connForm) readHops(r *http.Request) {
	for i := 1; i < maxFormHops; i++ {
		if _, ok := r.PostForm[hopKey(i, "host")]; !ok {
			break
		}
		for _, part := range []string{"host", "port", "user"} {
			f.Values[hopKey(i, part)] = strings.TrimSpace(r.PostFormValue(hopKey(i, part)))
		}
		if r.PostFormValue(hopKey(i, "own_key")) == "on" {
			f.Values[hopKey(i, "own_key")] = "on"
		}
		f.ExtraHops = i
	}
}

// fillHops fills the form's hop fields from a saved connection.
func (f *connForm) fillHops(v *app.ConnectionView) {
	t := v.SSHTunnel
	if t == nil {
		return
	}
	for i, h := range v.SSHHops {
		if i == 0 {
			continue
		}
		f.Values[hopKey(i, "host")], f.Values[hopKey(i, "port")], f.Values[hopKey(i, "user")] = h.Host, strconv.Itoa(h.Port), h.User
		if h.OwnKey {
			f.Values[hopKey(i, "own_key")] = "on"
		}
		f.ExtraHops = i
	}
	f.Values["ssh_tunnel.auth"] = string(t.Auth)
	f.Values["ssh_tunnel.proxy_command"] = commandText(t.ProxyCommand)
	f.Values["ssh_tunnel.host_authorities"] = strings.Join(t.HostAuthorities, "\n")
}

// commandText shows a command's words as the form reads them back: words
// separated by spaces, or a JSON array when splitting at white space would
// not give them back (a word that is empty or has white space, quotes or a
// backslash, or a first word starting with "[").
func commandText(words []string) string {
	for i, w := range words {
		if w == "" || strings.ContainsFunc(w, unicode.IsSpace) || strings.ContainsAny(w, "\"'\\") || (i == 0 && strings.HasPrefix(w, "[")) {
			b, _ := json.Marshal(words)
			return string(b)
		}
	}
	return strings.Join(words, " ")
}

// applyHops sets the chain fields of the form onto t.
func (f *connForm) applyHops(t *connection.Tunnel) {
	v := f.Values
	for i := 1; i <= f.ExtraHops; i++ {
		h := connection.Hop{Host: v[hopKey(i, "host")], User: v[hopKey(i, "user")], OwnKey: v[hopKey(i, "own_key")] == "on"}
		h.Port = f.number(hopKey(i, "port"), 1, 65535)
		t.Next = append(t.Next, h)
	}
	t.Auth = connection.SSHAuth(v["ssh_tunnel.auth"])
	if s := v["ssh_tunnel.proxy_command"]; s != "" {
		if strings.HasPrefix(s, "[") {
			if err := json.Unmarshal([]byte(s), &t.ProxyCommand); err != nil {
				f.Errors["ssh_tunnel.proxy_command"] = "not a JSON array of strings: give the program and its arguments separated by spaces, or a JSON array for arguments with spaces"
			}
		} else {
			t.ProxyCommand = strings.Fields(s)
		}
	}
	for line := range strings.SplitSeq(v["ssh_tunnel.host_authorities"], "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			t.HostAuthorities = append(t.HostAuthorities, line)
		}
	}
}

// hopAction adds, removes or moves a hop of the form: "add", "remove:N",
// "up:N", "down:N" (N from 0). It reports whether the action was known.
func (f *connForm) hopAction(action string) bool {
	type hop struct{ host, port, user, ownKey string }
	n := f.ExtraHops + 1
	hops := make([]hop, n)
	for i := range hops {
		hops[i] = hop{f.Values[hopKey(i, "host")], f.Values[hopKey(i, "port")], f.Values[hopKey(i, "user")], ""}
		if i > 0 {
			hops[i].ownKey = f.Values[hopKey(i, "own_key")]
		}
	}
	verb, arg, _ := strings.Cut(action, ":")
	i, err := strconv.Atoi(arg)
	switch {
	case verb == "add" && n < connection.MaxHops:
		hops = append(hops, hop{port: strconv.Itoa(connection.DefaultSSHPort)})
	case err != nil || i < 0 || i >= n:
		return false
	case verb == "remove" && n > 1:
		hops = append(hops[:i], hops[i+1:]...)
	case verb == "up" && i > 0:
		hops[i-1], hops[i] = hops[i], hops[i-1]
	case verb == "down" && i+1 < n:
		hops[i], hops[i+1] = hops[i+1], hops[i]
	default:
		return false
	}
	for i := 1; i < n; i++ {
		for _, part := range []string{"host", "port", "user", "own_key"} {
			delete(f.Values, hopKey(i, part))
		}
	}
	for i, h := range hops {
		f.Values[hopKey(i, "host")], f.Values[hopKey(i, "port")], f.Values[hopKey(i, "user")] = h.host, h.port, h.user
		if i > 0 && h.ownKey != "" {
			// A hop moved to the first place takes the connection's key.
			f.Values[hopKey(i, "own_key")] = h.ownKey
		}
	}
	f.ExtraHops = len(hops) - 1
	// Problems were about the hops as they were.
	for k := range f.Errors {
		if strings.HasPrefix(k, "ssh_hops.") || k == "ssh_tunnel.host" || k == "ssh_tunnel.port" || k == "ssh_tunnel.user" {
			delete(f.Errors, k)
		}
	}
	f.summarize()
	return true
}

// handleHopAction shows the form again with its hops changed when a hop
// button was pressed; it reports whether it did.
func (u *UI) handleHopAction(w http.ResponseWriter, r *http.Request, s *session, pf *parsedForm) bool {
	action := r.PostFormValue(fieldHopAction)
	if action == "" {
		return false
	}
	pf.form.Tunnel = true
	pf.form.hopAction(action)
	// Neither the password nor anything else is saved: say so.
	pf.form.HopsChanged = true
	u.renderForm(w, r, s, http.StatusOK, pf.form)
	return true
}

// showHops is what the connection page shows of a chain of hops, a key
// rotation and certificate logins.
type showHops struct {
	// HopLines are the restricted line of each hop (chains of hops).
	HopLines []app.HopKeyLines
	// Rotation are the lines of a key rotation under way, or nil.
	Rotation *app.KeyRotation
	// CA is pgrelay's SSH CA, for certificate logins (nil otherwise, or
	// when there is none yet).
	CA *app.SSHCAView
	// RotationError is why finishing a rotation failed.
	RotationError string
}

// loadHops fills what the page shows of hops, rotations and certificates.
func (u *UI) loadHops(r *http.Request, d *showData) error {
	c := d.C
	t := c.SSHTunnel
	if t == nil {
		return nil
	}
	ctx := r.Context()
	var err error
	if len(c.SSHHops) > 1 {
		if d.HopLines, err = u.cfg.App.HopKeys(ctx, c.Name); err != nil {
			return err
		}
	}
	if t.Rotation != nil && t.Rotation.Pending {
		if d.Rotation, err = u.cfg.App.RotateKeyStatus(ctx, c.Name); err != nil {
			return err
		}
	}
	if t.Auth == connection.SSHAuthCertificate {
		if ca, err := u.cfg.App.SSHCA(ctx); err == nil {
			d.CA = ca
		}
	}
	return nil
}

// rotateStart starts a key rotation with two live keys.
func (u *UI) rotateStart(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	if _, err := u.cfg.App.RotateKeyStart(r.Context(), name, 0); err != nil {
		u.rotationError(w, r, s, name, err)
		return
	}
	http.Redirect(w, r, "/connections/"+url.PathEscape(name)+"?rotation=started#key-rotation", http.StatusSeeOther)
}

// rotateFinish promotes a rotation's new key once every hop accepts it.
func (u *UI) rotateFinish(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	if _, err := u.cfg.App.RotateKeyFinish(r.Context(), name); err != nil {
		u.rotationError(w, r, s, name, err)
		return
	}
	http.Redirect(w, r, "/connections/"+url.PathEscape(name)+"?rotation=finished", http.StatusSeeOther)
}

// rotateCancel drops a rotation's new key.
func (u *UI) rotateCancel(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	if _, err := u.cfg.App.RotateKeyCancel(r.Context(), name); err != nil {
		u.rotationError(w, r, s, name, err)
		return
	}
	http.Redirect(w, r, "/connections/"+url.PathEscape(name)+"?rotation=cancelled", http.StatusSeeOther)
}

// rotationError shows the connection's page with why a step of a key
// rotation failed (an error a user can act on), or the error page.
func (u *UI) rotationError(w http.ResponseWriter, r *http.Request, s *session, name string, err error) {
	if !app.IsConnectFailure(err) && !isInvalid(err) {
		u.appError(w, r, name, err)
		return
	}
	d, lerr := u.loadShow(r, name)
	if lerr != nil {
		u.appError(w, r, name, lerr)
		return
	}
	d.RotationError = err.Error()
	u.render(w, r, http.StatusConflict, "show", &page{Title: name, Nav: "connections", Session: s, Data: d})
}

// rotationFlash is the message after a step of a key rotation.
func rotationFlash(step string) *flash {
	switch step {
	case "started":
		return &flash{Kind: "success", Title: "Key rotation started",
			Message: "Install the new lines below on every hop. pgrelay tries the new key first and falls back to the old one meanwhile, so nothing fails; the first login that every hop accepts with the new key promotes it."}
	case "finished":
		return &flash{Kind: "success", Title: "New key promoted",
			Message: "Every hop accepted the new key; the old one is no longer used. Remove its line from the hops."}
	case "cancelled":
		return &flash{Kind: "success", Title: "Key rotation cancelled", Message: "The current key stays; remove the new key's lines from the hops. Where the current key's line was given its expiry-time, put it back without it (the bastion setup script does), or sshd refuses the only key after that time."}
	}
	return nil
}

// ProxyCommandText is the connection's proxy command as a shell would
// read it back, or "".
func (d *showData) ProxyCommandText() string {
	if t := d.C.SSHTunnel; t != nil && len(t.ProxyCommand) > 0 {
		return jobs.ShellJoin(t.ProxyCommand)
	}
	return ""
}

// PendingHops are the hops after the first whose host key waits for
// approval (the first hop's shows in the page's alert of its own).
func (d *showData) PendingHops() []pendingHop {
	var out []pendingHop
	for i, h := range d.C.SSHHops {
		if i > 0 && h.PendingHostKeyFingerprint != "" {
			out = append(out, pendingHop{Place: i + 1, Of: len(d.C.SSHHops), HopView: h})
		}
	}
	return out
}

// pendingHop is a hop whose host key waits for approval.
type pendingHop struct {
	Place, Of int
	app.HopView
}

// Certificates reports whether the connection logs in with certificates.
func (d *showData) Certificates() bool {
	t := d.C.SSHTunnel
	return t != nil && t.Auth == connection.SSHAuthCertificate
}

// isInvalid reports whether err is a request a user can correct.
func isInvalid(err error) bool {
	var ve *app.ValidationError
	return errors.Is(err, app.ErrInvalid) || errors.As(err, &ve)
}

// stepTitle names a test step for people: its label, after its hop in a
// chain ("Hop 2 of 3 (bastion-b:22): SSH login"); the script has the same
// (app.js, stepTitle).
func stepTitle(s diagnose.Step) string {
	if s.Hop == 0 {
		return stepLabel(s.ID)
	}
	where := fmt.Sprintf("Hop %d of %d", s.Hop, s.Of)
	if s.HopAddr != "" {
		where += " (" + s.HopAddr + ")"
	}
	return where + ": " + stepLabel(s.ID)
}
