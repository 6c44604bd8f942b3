package sshkey

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// rsaPair generates one RSA pair for the whole test binary: 3072-bit keys
// take a moment to generate.
var rsaPair = sync.OnceValues(func() (*Pair, error) { return Generate(RSA, "rsa-test") })

func mustRSA(t *testing.T) *Pair {
	t.Helper()
	p, err := rsaPair()
	if err != nil {
		t.Fatalf("Generate(RSA): %v", err)
	}
	return p
}

func mustEd25519(t *testing.T) *Pair {
	t.Helper()
	p, err := Generate(Ed25519, "ed-test")
	if err != nil {
		t.Fatalf("Generate(Ed25519): %v", err)
	}
	return p
}

func TestParseType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Type
		wantErr bool
	}{
		{in: "", want: Ed25519},
		{in: "ed25519", want: Ed25519},
		{in: "ED25519", want: Ed25519},
		{in: "  ed25519\n", want: Ed25519},
		{in: "rsa", want: RSA},
		{in: "RSA", want: RSA},
		{in: " Rsa ", want: RSA},
		{in: "dsa", wantErr: true},
		{in: "ecdsa", wantErr: true},
		{in: "ssh-rsa", wantErr: true},
		{in: "ssh-ed25519", wantErr: true},
		{in: "rsa3072", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseType(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseType(%q) = %q, want error", tt.in, got)
				}
				for _, want := range []string{tt.in, "ed25519", "rsa"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("ParseType(%q) error %q does not mention %q", tt.in, err, want)
					}
				}
				if got != "" {
					t.Errorf("ParseType(%q) = %q with error, want empty type", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseType(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseType(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		typ      Type
		wantType Type
		wantAlgo string
		check    func(t *testing.T, pub any)
	}{
		{
			name: "ed25519", typ: Ed25519, wantType: Ed25519, wantAlgo: ssh.KeyAlgoED25519,
			check: func(t *testing.T, pub any) {
				k, ok := pub.(ed25519.PublicKey)
				if !ok {
					t.Fatalf("crypto public key is %T, want ed25519.PublicKey", pub)
				}
				if len(k) != ed25519.PublicKeySize {
					t.Errorf("ed25519 public key is %d bytes, want %d", len(k), ed25519.PublicKeySize)
				}
			},
		},
		{
			name: "empty means ed25519", typ: "", wantType: Ed25519, wantAlgo: ssh.KeyAlgoED25519,
			check: func(t *testing.T, pub any) {
				if _, ok := pub.(ed25519.PublicKey); !ok {
					t.Fatalf("crypto public key is %T, want ed25519.PublicKey", pub)
				}
			},
		},
		{
			name: "rsa", typ: RSA, wantType: RSA, wantAlgo: ssh.KeyAlgoRSA,
			check: func(t *testing.T, pub any) {
				k, ok := pub.(*rsa.PublicKey)
				if !ok {
					t.Fatalf("crypto public key is %T, want *rsa.PublicKey", pub)
				}
				if got := k.N.BitLen(); got != 3072 {
					t.Errorf("rsa modulus is %d bits, want 3072", got)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var p *Pair
			var err error
			if tt.typ == RSA {
				p, err = rsaPair()
			} else {
				p, err = Generate(tt.typ, "c")
			}
			if err != nil {
				t.Fatalf("Generate(%q): %v", tt.typ, err)
			}
			if p.Type != tt.wantType {
				t.Errorf("Type = %q, want %q", p.Type, tt.wantType)
			}
			if got := p.Public.Type(); got != tt.wantAlgo {
				t.Errorf("Public.Type() = %q, want %q", got, tt.wantAlgo)
			}
			cpk, ok := p.Public.(ssh.CryptoPublicKey)
			if !ok {
				t.Fatalf("public key %T does not implement ssh.CryptoPublicKey", p.Public)
			}
			tt.check(t, cpk.CryptoPublicKey())

			// The private PEM parses back to the same public key.
			if !bytes.HasPrefix(p.PrivatePEM, []byte("-----BEGIN OPENSSH PRIVATE KEY-----")) {
				t.Errorf("PrivatePEM does not start with an OpenSSH header: %.40q", p.PrivatePEM)
			}
			s, err := ssh.ParsePrivateKey(p.PrivatePEM)
			if err != nil {
				t.Fatalf("ssh.ParsePrivateKey(PrivatePEM): %v", err)
			}
			if !bytes.Equal(s.PublicKey().Marshal(), p.Public.Marshal()) {
				t.Error("public key parsed from PrivatePEM differs from Pair.Public")
			}
		})
	}
}

func TestGenerateUnknownType(t *testing.T) {
	t.Parallel()
	for _, typ := range []Type{"dsa", "ecdsa", "RSA", "ssh-ed25519"} {
		p, err := Generate(typ, "c")
		if err == nil {
			t.Errorf("Generate(%q) = %+v, want error", typ, p)
			continue
		}
		if !strings.Contains(err.Error(), string(typ)) {
			t.Errorf("Generate(%q) error %q does not name the type", typ, err)
		}
	}
}

func TestGenerateDiffers(t *testing.T) {
	t.Parallel()
	for _, typ := range []Type{Ed25519, RSA} {
		t.Run(string(typ), func(t *testing.T) {
			t.Parallel()
			a, err := Generate(typ, "same")
			if err != nil {
				t.Fatal(err)
			}
			b, err := Generate(typ, "same")
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(a.Public.Marshal(), b.Public.Marshal()) {
				t.Error("two generations gave the same public key")
			}
			if bytes.Equal(a.PrivatePEM, b.PrivatePEM) {
				t.Error("two generations gave the same private key")
			}
			if Fingerprint(a.Public) == Fingerprint(b.Public) {
				t.Error("two generations gave the same fingerprint")
			}
		})
	}
}

func TestSignerRSAUsesSHA2(t *testing.T) {
	t.Parallel()
	p := mustRSA(t)
	s, err := Signer(p.PrivatePEM)
	if err != nil {
		t.Fatalf("Signer: %v", err)
	}
	if !bytes.Equal(s.PublicKey().Marshal(), p.Public.Marshal()) {
		t.Fatal("signer's public key differs from the pair's")
	}
	data := []byte("session data to sign")

	sig, err := s.Sign(rand.Reader, data)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if sig.Format != ssh.KeyAlgoRSASHA512 {
		t.Errorf("Sign Format = %q, want %q", sig.Format, ssh.KeyAlgoRSASHA512)
	}
	if err := p.Public.Verify(data, sig); err != nil {
		t.Errorf("Verify(Sign()): %v", err)
	}

	as, ok := s.(ssh.AlgorithmSigner)
	if !ok {
		t.Fatalf("RSA signer %T is not an ssh.AlgorithmSigner", s)
	}
	ms, ok := s.(ssh.MultiAlgorithmSigner)
	if !ok {
		t.Fatalf("RSA signer %T is not an ssh.MultiAlgorithmSigner", s)
	}
	algos := ms.Algorithms()
	if want := []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}; !slices.Equal(algos, want) {
		t.Errorf("Algorithms() = %q, want %q", algos, want)
	}
	if slices.Contains(algos, ssh.KeyAlgoRSA) {
		t.Errorf("Algorithms() = %q contains the SHA-1 %q", algos, ssh.KeyAlgoRSA)
	}

	tests := []struct {
		algo    string
		want    string
		wantErr bool
	}{
		{algo: "", want: ssh.KeyAlgoRSASHA512},
		{algo: ssh.KeyAlgoRSASHA512, want: ssh.KeyAlgoRSASHA512},
		{algo: ssh.KeyAlgoRSASHA256, want: ssh.KeyAlgoRSASHA256},
		{algo: ssh.KeyAlgoRSA, wantErr: true},
		{algo: ssh.KeyAlgoED25519, wantErr: true},
	}
	for _, tt := range tests {
		sig, err := as.SignWithAlgorithm(rand.Reader, data, tt.algo)
		if tt.wantErr {
			if err == nil {
				t.Errorf("SignWithAlgorithm(%q) = %q signature, want error", tt.algo, sig.Format)
			}
			continue
		}
		if err != nil {
			t.Errorf("SignWithAlgorithm(%q): %v", tt.algo, err)
			continue
		}
		if sig.Format != tt.want {
			t.Errorf("SignWithAlgorithm(%q) Format = %q, want %q", tt.algo, sig.Format, tt.want)
		}
		if err := p.Public.Verify(data, sig); err != nil {
			t.Errorf("Verify(SignWithAlgorithm(%q)): %v", tt.algo, err)
		}
	}
}

func TestSignerEd25519(t *testing.T) {
	t.Parallel()
	p := mustEd25519(t)
	s, err := Signer(p.PrivatePEM)
	if err != nil {
		t.Fatalf("Signer: %v", err)
	}
	if !bytes.Equal(s.PublicKey().Marshal(), p.Public.Marshal()) {
		t.Fatal("signer's public key differs from the pair's")
	}
	data := []byte("hello")
	sig, err := s.Sign(rand.Reader, data)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if sig.Format != ssh.KeyAlgoED25519 {
		t.Errorf("Sign Format = %q, want %q", sig.Format, ssh.KeyAlgoED25519)
	}
	if err := p.Public.Verify(data, sig); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if err := p.Public.Verify([]byte("other"), sig); err == nil {
		t.Error("Verify accepted a signature over other data")
	}
}

func TestSignerInvalidPEM(t *testing.T) {
	t.Parallel()
	p := mustEd25519(t)
	tests := map[string][]byte{
		"empty":     nil,
		"garbage":   []byte("not a key"),
		"public":    ssh.MarshalAuthorizedKey(p.Public),
		"truncated": p.PrivatePEM[:len(p.PrivatePEM)/2],
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, err := Signer(in)
			if err == nil {
				t.Fatalf("Signer(%s) = %v, want error", name, s)
			}
			if !strings.Contains(err.Error(), "parse private key") {
				t.Errorf("error %q does not say what failed", err)
			}
		})
	}
}

func TestComment(t *testing.T) {
	t.Parallel()
	if got := Comment("wh"); got != "pgrelay:wh" {
		t.Errorf("Comment(wh) = %q, want pgrelay:wh", got)
	}
}

func TestAuthorizedKey(t *testing.T) {
	t.Parallel()
	for _, p := range []*Pair{mustEd25519(t), mustRSA(t)} {
		t.Run(string(p.Type), func(t *testing.T) {
			t.Parallel()
			b64 := base64.StdEncoding.EncodeToString(p.Public.Marshal())
			want := p.Public.Type() + " " + b64 + " pgrelay:wh"
			got := AuthorizedKey(p.Public, Comment("wh"))
			if got != want {
				t.Errorf("AuthorizedKey = %q, want %q", got, want)
			}
			pub, comment, opts, rest, err := ssh.ParseAuthorizedKey([]byte(got))
			if err != nil {
				t.Fatalf("ssh.ParseAuthorizedKey: %v", err)
			}
			if comment != "pgrelay:wh" {
				t.Errorf("comment = %q, want pgrelay:wh", comment)
			}
			if len(opts) != 0 || len(rest) != 0 {
				t.Errorf("options = %q, rest = %q, want none", opts, rest)
			}
			if !bytes.Equal(pub.Marshal(), p.Public.Marshal()) {
				t.Error("parsed key differs")
			}

			// No comment: no trailing space.
			if got, want := AuthorizedKey(p.Public, ""), p.Public.Type()+" "+b64; got != want {
				t.Errorf("AuthorizedKey without comment = %q, want %q", got, want)
			}
		})
	}
}

func TestRestrictedAuthorizedKey(t *testing.T) {
	t.Parallel()
	p := mustEd25519(t)
	b64 := base64.StdEncoding.EncodeToString(p.Public.Marshal())
	tests := []struct {
		host       string
		port       int
		permitopen string
	}{
		{host: "db.internal", port: 5432, permitopen: `permitopen="db.internal:5432"`},
		{host: "10.0.0.7", port: 6432, permitopen: `permitopen="10.0.0.7:6432"`},
		{host: "2001:db8::5", port: 5432, permitopen: `permitopen="[2001:db8::5]:5432"`},
		{host: "::1", port: 15432, permitopen: `permitopen="[::1]:15432"`},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			t.Parallel()
			got := RestrictedAuthorizedKey(p.Public, Comment("wh"), tt.host, tt.port)
			want := "restrict,port-forwarding," + tt.permitopen + " ssh-ed25519 " + b64 + " pgrelay:wh"
			if got != want {
				t.Errorf("RestrictedAuthorizedKey =\n %q\nwant\n %q", got, want)
			}
			if strings.Contains(got, "\n") {
				t.Error("line contains a newline")
			}
			pub, comment, opts, rest, err := ssh.ParseAuthorizedKey([]byte(got))
			if err != nil {
				t.Fatalf("ssh.ParseAuthorizedKey(%q): %v", got, err)
			}
			if wantOpts := []string{"restrict", "port-forwarding", tt.permitopen}; !slices.Equal(opts, wantOpts) {
				t.Errorf("options = %q, want %q", opts, wantOpts)
			}
			if comment != "pgrelay:wh" {
				t.Errorf("comment = %q, want pgrelay:wh", comment)
			}
			if len(rest) != 0 {
				t.Errorf("rest = %q, want none", rest)
			}
			if !bytes.Equal(pub.Marshal(), p.Public.Marshal()) {
				t.Error("parsed key differs")
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	t.Parallel()
	for _, p := range []*Pair{mustEd25519(t), mustRSA(t)} {
		fp := Fingerprint(p.Public)
		if !strings.HasPrefix(fp, "SHA256:") {
			t.Errorf("%s Fingerprint = %q, want SHA256: prefix", p.Type, fp)
		}
		// SHA-256 is 32 bytes: 43 characters of unpadded base64.
		if got := len(strings.TrimPrefix(fp, "SHA256:")); got != 43 {
			t.Errorf("%s Fingerprint = %q has %d hash characters, want 43", p.Type, fp, got)
		}
		if fp != ssh.FingerprintSHA256(p.Public) {
			t.Errorf("Fingerprint = %q, want %q", fp, ssh.FingerprintSHA256(p.Public))
		}
		if fp2 := Fingerprint(p.Public); fp2 != fp {
			t.Errorf("Fingerprint is not stable: %q then %q", fp, fp2)
		}
	}
}

func TestParsePublic(t *testing.T) {
	t.Parallel()
	p := mustEd25519(t)
	r := mustRSA(t)
	valid := []struct {
		name string
		line string
		want ssh.PublicKey
	}{
		{"ed25519 with comment", AuthorizedKey(p.Public, "pgrelay:wh"), p.Public},
		{"ed25519 without comment", AuthorizedKey(p.Public, ""), p.Public},
		{"ed25519 with newline", string(ssh.MarshalAuthorizedKey(p.Public)), p.Public},
		{"rsa", AuthorizedKey(r.Public, "x"), r.Public},
		{"restricted", RestrictedAuthorizedKey(p.Public, "c", "db", 5432), p.Public},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePublic(tt.line)
			if err != nil {
				t.Fatalf("ParsePublic(%q): %v", tt.line, err)
			}
			if !bytes.Equal(got.Marshal(), tt.want.Marshal()) {
				t.Error("parsed key differs")
			}
		})
	}
	invalid := []string{"", "ssh-ed25519", "ssh-ed25519 !!!notbase64", "hello world", "ssh-ed25519 AAAA"}
	for _, line := range invalid {
		t.Run("invalid/"+line, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePublic(line)
			if err == nil {
				t.Fatalf("ParsePublic(%q) = %v, want error", line, got)
			}
			if !strings.Contains(err.Error(), "parse public key") {
				t.Errorf("error %q does not say what failed", err)
			}
		})
	}
}
