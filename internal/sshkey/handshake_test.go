package sshkey

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// authenticate runs an SSH handshake on loopback between a client using
// signer and an x/crypto server that accepts only serverAlgos for public key
// authentication, and returns the client's error.
func authenticate(t *testing.T, signer ssh.Signer, serverAlgos []string) error {
	t.Helper()
	host, err := Generate(Ed25519, "host")
	if err != nil {
		t.Fatal(err)
	}
	hostSigner, err := Signer(host.PrivatePEM)
	if err != nil {
		t.Fatal(err)
	}
	srvCfg := &ssh.ServerConfig{
		PublicKeyAuthAlgorithms: serverAlgos,
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(key.Marshal(), signer.PublicKey().Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	srvCfg.AddHostKey(hostSigner)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(20 * time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		sc, chans, reqs, err := ssh.NewServerConn(c, srvCfg)
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		go func() {
			for ch := range chans {
				_ = ch.Reject(ssh.Prohibited, "no channels")
			}
		}()
		_ = sc.Wait()
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(deadline)
	cc, _, _, err := ssh.NewClientConn(c, ln.Addr().String(), &ssh.ClientConfig{
		User:            "dbtcloud",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(host.Public),
	})
	if err == nil {
		_ = cc.Close()
	}
	_ = c.Close()
	<-done
	return err
}

func TestSignerAuthenticates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		pair        func(*testing.T) *Pair
		serverAlgos []string
		wantOK      bool
	}{
		{"rsa, server default", mustRSA, nil, true},
		{"rsa, server rsa-sha2-512 only", mustRSA, []string{ssh.KeyAlgoRSASHA512}, true},
		{"rsa, server rsa-sha2-256 only", mustRSA, []string{ssh.KeyAlgoRSASHA256}, true},
		{"rsa, server ssh-rsa only", mustRSA, []string{ssh.KeyAlgoRSA}, false},
		{"ed25519", mustEd25519, []string{ssh.KeyAlgoED25519}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, err := Signer(tt.pair(t).PrivatePEM)
			if err != nil {
				t.Fatal(err)
			}
			err = authenticate(t, s, tt.serverAlgos)
			if tt.wantOK {
				if err != nil {
					t.Fatalf("authentication failed: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("authenticated with the SHA-1 ssh-rsa algorithm")
			}
			// Depending on whether the server announced server-sig-algs,
			// the client refuses up front or tries and is refused.
			if msg := err.Error(); !strings.Contains(msg, "unable to authenticate") &&
				!strings.Contains(msg, "no common public key signature algorithm") {
				t.Errorf("error %q is not an authentication failure", err)
			}
		})
	}
}
