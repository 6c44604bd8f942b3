package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
)

// HopInput is one SSH hop of ConnectionInput.SSHHops.
type HopInput struct {
	Host string `json:"host"`
	Port int    `json:"port,omitempty"`
	User string `json:"user"`
	// KnownHost is the hop's host key to pin at once. Write-only: absent
	// keeps the pinned keys.
	KnownHost string `json:"known_host,omitempty"`
}

// hopInputs returns every hop of t as inputs.
func hopInputs(t *connection.Tunnel) []HopInput {
	hops := t.Hops()
	if len(hops) < 2 {
		return nil
	}
	out := make([]HopInput, len(hops))
	for i, h := range hops {
		out[i] = HopInput{Host: h.Host, Port: h.Port, User: h.User, KnownHost: h.KnownHost}
	}
	return out
}

// applyHops makes in.SSHHops the chain of s (adding a tunnel with defaults
// when ssh_tunnel was left out).
func (in *ConnectionInput) applyHops(s *connection.Spec) {
	if len(in.SSHHops) == 0 {
		return
	}
	hops := make([]connection.Hop, len(in.SSHHops))
	for i, h := range in.SSHHops {
		hops[i] = connection.Hop{Host: h.Host, Port: h.Port, User: h.User, KnownHost: h.KnownHost}
	}
	if s.Tunnel != nil && hops[0].KnownHost == "" {
		hops[0].KnownHost = s.Tunnel.KnownHost
	}
	s.SetHops(hops)
}

// checkHops refuses an ssh_tunnel whose host, port, user or known_host
// differ from those of ssh_hops' first hop: the first hop is one.
func (in *ConnectionInput) checkHops() error {
	t := in.SSHTunnel
	if len(in.SSHHops) == 0 || t == nil {
		return nil
	}
	first := in.SSHHops[0]
	var probs []fielderr.Problem
	differs := func(field, a, b string) {
		if a != "" && a != b {
			probs = append(probs, fielderr.Problem{Field: "ssh_tunnel." + field, Problem: fmt.Sprintf(
				"%q differs from ssh_hops.0.%s (%q): the first hop is ssh_tunnel's host; leave ssh_tunnel's out, or give the same", a, field, b)})
		}
	}
	differs("host", t.Host, first.Host)
	if t.Port != 0 && first.Port != 0 && t.Port != first.Port {
		differs("port", strconv.Itoa(t.Port), strconv.Itoa(first.Port))
	}
	differs("user", t.User, first.User)
	if t.KnownHost != "" && first.KnownHost != "" {
		differs("known_host", t.KnownHost, first.KnownHost)
	}
	if len(probs) > 0 {
		return &app.ValidationError{Subject: fielderr.Connection, Problems: probs}
	}
	return nil
}

// hopFields names the problems of the first hop after ssh_hops (as the
// request gave it) rather than ssh_tunnel.
func (in *ConnectionInput) hopFields(err error) error {
	var ve *app.ValidationError
	if len(in.SSHHops) == 0 || !errors.As(err, &ve) {
		return err
	}
	for i, p := range ve.Problems {
		for _, f := range []string{"host", "port", "user", "known_host"} {
			if p.Field == "ssh_tunnel."+f && (in.SSHTunnel == nil || in.SSHTunnel.Host == "") {
				ve.Problems[i].Field = "ssh_hops.0." + f
			}
		}
	}
	return err
}

// hopParam reads ?hop=N (default 1).
func hopParam(r *http.Request) (int, error) {
	s := r.URL.Query().Get("hop")
	if s == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 {
		return 0, fieldError(http.StatusBadRequest, CodeValidationFailed, "hop",
			strconv.Quote(s)+" is not accepted: give the hop's place in the chain, from 1")
	}
	return n, nil
}

// KeyRotationRequest is the optional body of POST
// /connections/{name}/key-rotation.
type KeyRotationRequest struct {
	// OldKeyLifetime is how long the old key's line stays valid
	// (expiry-time); default 168h.
	OldKeyLifetime Duration `json:"old_key_lifetime,omitempty"`
}

func (a *API) keyRotation(w http.ResponseWriter, r *http.Request) error {
	rot, err := a.cfg.App.RotateKeyStatus(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rot)
}

func (a *API) startKeyRotation(w http.ResponseWriter, r *http.Request) error {
	var in KeyRotationRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, &in); err != nil {
			return err
		}
	}
	rot, err := a.cfg.App.RotateKeyStart(r.Context(), r.PathValue("name"), connection.Duration(in.OldKeyLifetime).Duration())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, rot)
}

func (a *API) finishKeyRotation(w http.ResponseWriter, r *http.Request) error {
	rot, err := a.cfg.App.RotateKeyFinish(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rot)
}

func (a *API) cancelKeyRotation(w http.ResponseWriter, r *http.Request) error {
	v, err := a.cfg.App.RotateKeyCancel(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}

func (a *API) getSSHCA(w http.ResponseWriter, r *http.Request) error {
	ca, err := a.cfg.App.SSHCA(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, ca)
}

func (a *API) initSSHCA(w http.ResponseWriter, r *http.Request) error {
	ca, err := a.cfg.App.InitSSHCA(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, ca)
}
