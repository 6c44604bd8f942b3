// Package sshkey generates the key pair that pgrelay uses to log in to a
// bastion, and formats its public half for authorized_keys.
//
// Keys are ed25519 by default. RSA keys are 3072 bits and sign only with
// rsa-sha2-512 or rsa-sha2-256: OpenSSH 8.8 and later refuse the SHA-1
// "ssh-rsa" signature algorithm.
package sshkey

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Type is a key algorithm pgrelay can generate.
type Type string

// Key types.
const (
	Ed25519 Type = "ed25519"
	RSA     Type = "rsa"
)

// RSABits is the size of generated RSA keys.
const RSABits = 3072

// ParseType parses a key type name; empty means ed25519.
func ParseType(s string) (Type, error) {
	switch Type(strings.ToLower(strings.TrimSpace(s))) {
	case "", Ed25519:
		return Ed25519, nil
	case RSA:
		return RSA, nil
	}
	return "", fmt.Errorf("unknown key type %q: accepted are ed25519 (default) and rsa", s)
}

// Pair is a generated key pair.
type Pair struct {
	Type Type
	// PrivatePEM is the private key in OpenSSH PEM format. It is a secret.
	PrivatePEM []byte
	// Public is the public key.
	Public ssh.PublicKey
}

// Generate creates a new key pair; comment is stored in the private key file.
func Generate(t Type, comment string) (*Pair, error) {
	var priv crypto.PrivateKey
	switch t {
	case Ed25519, "":
		t = Ed25519
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate ed25519 key: %w", err)
		}
		priv = k
	case RSA:
		k, err := rsa.GenerateKey(rand.Reader, RSABits)
		if err != nil {
			return nil, fmt.Errorf("generate rsa key: %w", err)
		}
		priv = k
	default:
		return nil, fmt.Errorf("generate key: unknown key type %q", t)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("signer from key: %w", err)
	}
	return &Pair{Type: t, PrivatePEM: pem.EncodeToMemory(block), Public: signer.PublicKey()}, nil
}

// Signer parses an OpenSSH private key and returns a signer for it. RSA
// signers are restricted to the SHA-2 algorithms.
func Signer(privatePEM []byte) (ssh.Signer, error) {
	s, err := ssh.ParsePrivateKey(privatePEM)
	if err != nil {
		// The parse error never contains key material.
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	if s.PublicKey().Type() == ssh.KeyAlgoRSA {
		as, ok := s.(ssh.AlgorithmSigner)
		if !ok {
			return nil, fmt.Errorf("rsa signer does not support SHA-2 algorithms")
		}
		ms, err := ssh.NewSignerWithAlgorithms(as, []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256})
		if err != nil {
			return nil, fmt.Errorf("restrict rsa signer to SHA-2: %w", err)
		}
		return sha2Signer{ms}, nil
	}
	return s, nil
}

// sha2Signer is an RSA signer restricted to SHA-2 whose Sign, and
// SignWithAlgorithm without an algorithm, use rsa-sha2-512: the embedded
// x/crypto signer would otherwise fall back to the SHA-1 "ssh-rsa" for them.
type sha2Signer struct{ ssh.MultiAlgorithmSigner }

// Sign signs data with rsa-sha2-512.
func (s sha2Signer) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	return s.SignWithAlgorithm(rand, data, ssh.KeyAlgoRSASHA512)
}

// SignWithAlgorithm signs data with algorithm, rsa-sha2-512 when empty.
func (s sha2Signer) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	if algorithm == "" {
		algorithm = ssh.KeyAlgoRSASHA512
	}
	return s.MultiAlgorithmSigner.SignWithAlgorithm(rand, data, algorithm)
}

// Comment is the comment pgrelay puts on the public key of a connection.
func Comment(connection string) string { return "pgrelay:" + connection }

// AuthorizedKey formats pub as an authorized_keys line with a comment.
func AuthorizedKey(pub ssh.PublicKey, comment string) string {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	if comment != "" {
		line += " " + comment
	}
	return line
}

// RestrictedAuthorizedKey formats pub as an authorized_keys line that allows
// nothing but port forwarding to host:port (no shell, no agent or X11
// forwarding, no PTY).
func RestrictedAuthorizedKey(pub ssh.PublicKey, comment, host string, port int) string {
	target := host
	if strings.Contains(host, ":") {
		// sshd's permitopen takes IPv6 literals in brackets.
		target = "[" + host + "]"
	}
	opts := `restrict,port-forwarding,permitopen="` + target + ":" + strconv.Itoa(port) + `"`
	return opts + " " + AuthorizedKey(pub, comment)
}

// Fingerprint returns the SHA256 fingerprint of a key ("SHA256:...").
func Fingerprint(pub ssh.PublicKey) string { return ssh.FingerprintSHA256(pub) }

// ParsePublic parses a public key in authorized_keys format.
func ParsePublic(line string) (ssh.PublicKey, error) {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	return pub, nil
}
