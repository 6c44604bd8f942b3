package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSCert is a throwaway CA and a server certificate it signed for
// 127.0.0.1, ::1 and "localhost", the certificate and its key written as
// PEM files: for HTTPS servers in tests.
type TLSCert struct {
	// CAPEM is the CA's certificate, PEM encoded.
	CAPEM []byte
	// Pool holds the CA's certificate alone: a client with it as RootCAs
	// trusts the server certificate.
	Pool *x509.CertPool
	// CertFile and KeyFile are the server certificate and its private key
	// (PKCS #8), PEM encoded, in a directory removed when the test ends.
	CertFile, KeyFile string
}

// NewTLSCert makes an ECDSA P-256 CA and a server certificate it signed
// for the loopback addresses, valid from an hour ago for a week, and
// writes the certificate and key to files.
func NewTLSCert(tb testing.TB) *TLSCert {
	tb.Helper()
	certs, err := newServerTLS(nil, false)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	dir := tb.TempDir()
	c := &TLSCert{CAPEM: certs.caPEM, Pool: x509.NewCertPool(),
		CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	if !c.Pool.AppendCertsFromPEM(certs.caPEM) {
		tb.Fatal("testenv: the CA certificate just made does not parse")
	}
	if err := os.WriteFile(c.CertFile, certs.certPEM, 0o644); err != nil {
		tb.Fatalf("testenv: write server certificate: %v", err)
	}
	if err := os.WriteFile(c.KeyFile, certs.keyPEM, 0o600); err != nil {
		tb.Fatalf("testenv: write server key: %v", err)
	}
	return c
}

// serverTLS holds a freshly made CA and a server certificate it signed, all
// PEM encoded.
type serverTLS struct {
	caPEM, certPEM, keyPEM []byte
}

// newServerTLS makes an ECDSA P-256 CA and a server certificate for hosts
// (names and IP addresses; nil: 127.0.0.1, ::1 and "localhost"), valid from
// an hour ago for a week; with caExpired, the CA certificate expired an
// hour ago.
func newServerTLS(hosts []string, caExpired bool) (*serverTLS, error) {
	if hosts == nil {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
	}
	var names []string
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, h)
		}
	}
	cn := "pgrelay testenv server"
	if len(names) > 0 {
		cn = names[0]
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "pgrelay testenv CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if caExpired {
		caTmpl.NotBefore, caTmpl.NotAfter = now.Add(-30*24*time.Hour), now.Add(-time.Hour)
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal server key: %w", err)
	}
	return &serverTLS{
		caPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func randomSerial() *big.Int {
	// rand.Int only fails if the system's random source fails, and then
	// so does every key generation above.
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
