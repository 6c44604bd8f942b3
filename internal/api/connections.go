package api

import (
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// ConnectionInput is the body of POST /connections and PUT
// /connections/{name}: the fields of a ConnectionView a user sets, plus the
// write-only password. PUT replaces the whole connection, so absent fields
// take their defaults (port 5432, sslmode by flavor, threads 4, ...) and an
// absent or null ssh_tunnel means a direct connection.
type ConnectionInput struct {
	// Name is required on create; on update it may be left out, and if
	// given must be the connection's name (connections cannot be renamed).
	Name        string             `json:"name,omitempty"`
	Flavor      connection.Flavor  `json:"flavor,omitempty"`
	Host        string             `json:"host"`
	Port        int                `json:"port,omitempty"`
	Database    string             `json:"database"`
	User        string             `json:"user"`
	SSLMode     connection.SSLMode `json:"sslmode,omitempty"`
	SSLRootCert string             `json:"ssl_root_cert,omitempty"`
	Schema      string             `json:"schema,omitempty"`
	// Role is the role sessions act as (set at login); empty: the user.
	Role    string `json:"role,omitempty"`
	Threads int    `json:"threads,omitempty"`
	// RequireAuth is libpq 16's require_auth list; empty is the default
	// (no clear-text password unless the server certificate is verified).
	RequireAuth string `json:"require_auth,omitempty"`
	// HealthCheckInterval is how often the server tests the connection on
	// its own; absent or "0s" never.
	HealthCheckInterval Duration `json:"health_check_interval,omitempty"`
	// Password is write-only: absent (or null) on update keeps the stored
	// password, present sets it ("" removes it). It is never returned.
	Password  *Password    `json:"password,omitempty"`
	SSHTunnel *TunnelInput `json:"ssh_tunnel,omitempty"`
	// Auth says where the password comes from (absent: the stored
	// password); see AuthInput.
	Auth *AuthInput `json:"auth,omitempty"`
	// Pooler is none (default), transaction or session.
	Pooler connection.Pooler `json:"pooler,omitempty"`
	// SSHHops is the chain of SSH hops, in the order they are dialled: the
	// first is ssh_tunnel's host (which may be left out, or must be the
	// same), each further one is reached through the one before. See
	// hops.go.
	SSHHops []HopInput `json:"ssh_hops,omitempty"`
}

// TunnelInput is the SSH tunnel part of a ConnectionInput.
type TunnelInput struct {
	Host string `json:"host"`
	Port int    `json:"port,omitempty"`
	User string `json:"user"`
	// KeyType is ed25519 (default) or rsa. Changing it generates a new key
	// pair.
	KeyType           string   `json:"key_type,omitempty"`
	KeepaliveInterval Duration `json:"keepalive_interval,omitempty"`
	KeepaliveCountMax int      `json:"keepalive_count_max,omitempty"`
	// KnownHost is the bastion's host key to pin at once (a public key or
	// known_hosts lines). Write-only: absent keeps the pinned keys.
	KnownHost string `json:"known_host,omitempty"`
	// ProxyCommand is a program and its arguments (no shell) whose stdio
	// carries the SSH connection to the first hop; the server's command
	// allowlist must allow the program.
	ProxyCommand []string `json:"proxy_command,omitempty"`
	// Auth is key (default) or certificate.
	Auth connection.SSHAuth `json:"auth,omitempty"`
	// HostAuthorities are @cert-authority and @revoked known_hosts lines.
	HostAuthorities []string `json:"host_authorities,omitempty"`
}

// NewConnectionInput returns the input for spec; a non-nil password is
// sent (spec.Password is ignored then), a nil one is left out.
func NewConnectionInput(spec connection.Spec, password *secret.Value) ConnectionInput {
	in := ConnectionInput{Name: spec.Name, Flavor: spec.Flavor, Host: spec.Host, Port: spec.Port,
		Database: spec.Database, User: spec.User, SSLMode: spec.SSLMode, SSLRootCert: spec.SSLRootCert,
		Schema: spec.Schema, Role: spec.Role, Threads: spec.Threads, RequireAuth: spec.RequireAuth, Auth: newAuthInput(spec.Auth),
		Pooler: spec.Pooler, HealthCheckInterval: Duration(spec.HealthCheckInterval)}
	if password != nil {
		in.Password = NewPassword(*password)
	}
	if t := spec.Tunnel; t != nil {
		in.SSHTunnel = &TunnelInput{Host: t.Host, Port: t.Port, User: t.User, KeyType: t.KeyType,
			KeepaliveInterval: Duration(t.KeepaliveInterval), KeepaliveCountMax: t.KeepaliveCountMax,
			KnownHost: t.KnownHost, ProxyCommand: t.ProxyCommand, Auth: t.Auth, HostAuthorities: t.HostAuthorities}
		in.SSHHops = hopInputs(t)
	}
	return in
}

// Spec returns the connection spec of the input, with its password (if
// any).
func (in *ConnectionInput) Spec() connection.Spec {
	s := connection.Spec{Name: in.Name, Flavor: in.Flavor, Host: in.Host, Port: in.Port, Database: in.Database,
		User: in.User, SSLMode: in.SSLMode, SSLRootCert: in.SSLRootCert, Schema: in.Schema, Role: in.Role, Threads: in.Threads,
		RequireAuth: in.RequireAuth, Auth: in.Auth.auth(), Pooler: in.Pooler,
		HealthCheckInterval: connection.Duration(in.HealthCheckInterval)}
	if s.Pooler == connection.PoolerNone {
		s.Pooler = ""
	}
	if in.Password != nil {
		s.Password = in.Password.Value
	}
	if t := in.SSHTunnel; t != nil {
		s.Tunnel = &connection.Tunnel{Host: t.Host, Port: t.Port, User: t.User, KeyType: t.KeyType,
			KeepaliveInterval: connection.Duration(t.KeepaliveInterval), KeepaliveCountMax: t.KeepaliveCountMax,
			KnownHost: t.KnownHost, ProxyCommand: t.ProxyCommand, Auth: t.Auth, HostAuthorities: t.HostAuthorities}
	}
	in.applyHops(&s)
	return s
}

// ConnectionList is the body of GET /connections.
type ConnectionList struct {
	Connections []*app.ConnectionView `json:"connections"`
}

// PublicKeyResponse is the body of GET /connections/{name}/public-key.
type PublicKeyResponse = apiwire.PublicKeyResponse

// TrustHostKeyRequest is the body of POST
// /connections/{name}/trust-host-key.
type TrustHostKeyRequest = apiwire.TrustHostKeyRequest

func (a *API) listConnections(w http.ResponseWriter, r *http.Request) error {
	vs, err := a.cfg.App.ListConnections(r.Context())
	if err != nil {
		return err
	}
	if vs == nil {
		vs = []*app.ConnectionView{}
	}
	return writeJSON(w, http.StatusOK, ConnectionList{Connections: vs})
}

func (a *API) createConnection(w http.ResponseWriter, r *http.Request) error {
	var in ConnectionInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	if err := in.checkHops(); err != nil {
		return err
	}
	v, err := a.cfg.App.CreateConnection(r.Context(), in.Spec())
	if err != nil {
		return in.hopFields(err)
	}
	w.Header().Set("Location", Prefix+"/connections/"+url.PathEscape(v.Name))
	return writeJSON(w, http.StatusCreated, v)
}

func (a *API) getConnection(w http.ResponseWriter, r *http.Request) error {
	v, err := a.cfg.App.GetConnection(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}

func (a *API) updateConnection(w http.ResponseWriter, r *http.Request) error {
	var in ConnectionInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	var pw *secret.Value
	if in.Password != nil {
		pw = &in.Password.Value
	}
	if err := in.checkHops(); err != nil {
		return err
	}
	v, err := a.cfg.App.UpdateConnection(r.Context(), r.PathValue("name"), in.Spec(), pw)
	if err != nil {
		return in.hopFields(err)
	}
	return writeJSON(w, http.StatusOK, v)
}

func (a *API) deleteConnection(w http.ResponseWriter, r *http.Request) error {
	if err := a.cfg.App.DeleteConnection(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) publicKey(w http.ResponseWriter, r *http.Request) error {
	restricted := false
	if s := r.URL.Query().Get("restricted"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fieldError(http.StatusBadRequest, CodeValidationFailed, "restricted",
				strconv.Quote(s)+" is not accepted: use true or false")
		}
		restricted = b
	}
	line, err := a.cfg.App.PublicKey(r.Context(), r.PathValue("name"), restricted)
	if err != nil {
		return err
	}
	resp := PublicKeyResponse{PublicKey: line}
	if restricted {
		hops, err := a.cfg.App.HopKeys(r.Context(), r.PathValue("name"))
		if err != nil {
			return err
		}
		for _, h := range hops {
			resp.Hops = append(resp.Hops, apiwire.HopKeyLines{Hop: h.Hop, Host: h.Host, Port: h.Port, User: h.User,
				Line: h.Line, Old: h.Old, OwnKey: h.OwnKey, Fingerprint: h.Fingerprint})
		}
	}
	return writeJSON(w, http.StatusOK, resp)
}

func (a *API) bastionSetup(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	hop, err := hopParam(r)
	if err != nil {
		return err
	}
	script, err := a.cfg.App.BastionSetupHop(r.Context(), name, hop)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/x-shellscript; charset=utf-8")
	w.Header().Set("Content-Disposition", `inline; filename="pgrelay-bastion-setup-`+name+`.sh"`)
	_, err = io.WriteString(w, script)
	return err
}

func (a *API) rotateKey(w http.ResponseWriter, r *http.Request) error {
	// It replaces the key pair at once: a body (such as one meant for
	// key-rotation, with its old_key_lifetime) is refused rather than
	// ignored, so that nothing is replaced by mistake.
	if err := refuseBody(w, r, "it replaces the key pair at once (logins fail until the new public key is installed); "+
		"to start a rotation with two live keys instead, POST /api/v1/connections/{name}/key-rotation with {\"old_key_lifetime\": \"168h\"}"); err != nil {
		return err
	}
	rot, err := a.cfg.App.RotateKey(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rot)
}

func (a *API) trustHostKey(w http.ResponseWriter, r *http.Request) error {
	var in TrustHostKeyRequest
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	v, err := a.cfg.App.TrustHostKey(r.Context(), r.PathValue("name"), in.Fingerprint)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}
