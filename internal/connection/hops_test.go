package connection

import (
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/fielderr"
)

func TestParseHop(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]Hop{
		"jump@bastion.example.com":      {Host: "bastion.example.com", Port: 22, User: "jump"},
		"jump@bastion.example.com:2222": {Host: "bastion.example.com", Port: 2222, User: "jump"},
		"u@[2001:db8::1]:2022":          {Host: "2001:db8::1", Port: 2022, User: "u"},
		"u@[2001:db8::1]":               {Host: "2001:db8::1", Port: 22, User: "u"},
		" u@10.0.0.1 ":                  {Host: "10.0.0.1", Port: 22, User: "u"},
	} {
		got, err := ParseHop(in)
		if err != nil || got != want {
			t.Errorf("ParseHop(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"bastion.example.com": "has no user",
		"u@":                  "has no host",
		"u@host:99999":        "not a number from 1 to 65535",
		"u@2001:db8::1":       "in brackets",
	} {
		if _, err := ParseHop(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseHop(%q) = %v, want %q", in, err, msg)
		}
	}
}

func TestValidateHops(t *testing.T) {
	t.Parallel()
	s := Spec{Name: "c", Host: "db", Database: "d", User: "u",
		Tunnel: &Tunnel{Host: "b1", User: "u1", ProxyCommand: []string{"./relative", "x"}, Auth: "password",
			HostAuthorities: []string{"b2 ssh-ed25519 AAAA"},
			Next:            []Hop{{Host: "b2", User: ""}, {Host: "b3:22", User: "u3", Port: 70000}}}}
	s.ApplyDefaults()
	var ve *fielderr.Error
	err := s.Validate()
	if err == nil {
		t.Fatal("no problems")
	}
	ve = err.(*fielderr.Error)
	f := ve.Fields()
	for field, msg := range map[string]string{
		"ssh_hops.1.user":             "required",
		"ssh_hops.2.host":             "includes a port",
		"ssh_hops.2.port":             "out of range",
		"ssh_tunnel.proxy_command":    "not a relative path",
		"ssh_tunnel.auth":             "use key",
		"ssh_tunnel.host_authorities": "@cert-authority",
	} {
		if !strings.Contains(f[field], msg) {
			t.Errorf("%s: %q, want %q", field, f[field], msg)
		}
	}
	// Defaults: a further hop's port is 22.
	ok := Spec{Name: "c", Host: "db", Database: "d", User: "u", Tunnel: &Tunnel{Host: "b1", User: "u1", Next: []Hop{{Host: "b2", User: "u2"}}}}
	ok.ApplyDefaults()
	if err := ok.Validate(); err != nil || ok.Tunnel.Next[0].Port != 22 {
		t.Fatalf("valid chain: %v, port %d", err, ok.Tunnel.Next[0].Port)
	}
	if got := len(ok.Hops()); got != 2 {
		t.Fatalf("Hops() = %d", got)
	}
	clone := ok.Clone()
	clone.Tunnel.Next[0].Host = "changed"
	if ok.Tunnel.Next[0].Host != "b2" {
		t.Fatal("Clone shares the hops")
	}
	var direct Spec
	direct.SetHops(nil)
	if direct.Tunnel != nil {
		t.Fatal("SetHops(nil) made a tunnel")
	}
}
