package relay

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// localCertLifetime is how long a local certificate is valid. It is made
// afresh each time an endpoint starts.
const localCertLifetime = 2 * 365 * 24 * time.Hour

// LocalTLS is the certificate the relay presents to local clients that
// ask for TLS: self-signed, made when the endpoint starts, valid for the
// names given and for the loopback addresses.
type LocalTLS struct {
	// Config is the TLS server configuration.
	Config *tls.Config
	// CertPEM is the certificate, PEM encoded: a client that trusts it
	// (sslrootcert) can use sslmode=verify-full against the endpoint.
	CertPEM []byte
}

// NewLocalTLS makes an ECDSA P-256 key and a self-signed certificate for
// "localhost", 127.0.0.1, ::1 and names (host names or IP addresses, such
// as the listen address's host).
func NewLocalTLS(names ...string) (*LocalTLS, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("local TLS: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("local TLS: serial number: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "pgrelay local endpoint"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(localCertLifetime),
		// Its own issuer: a client trusts it by having it as its root.
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, n := range names {
		if n == "" {
			continue
		}
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if !slices.Contains(tmpl.DNSNames, n) {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("local TLS: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("local TLS: parse certificate: %w", err)
	}
	return &LocalTLS{
		Config: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}},
		},
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}
