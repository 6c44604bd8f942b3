package tunnel

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// hostPort splits the bastion's address for host pattern matching.
func (c Config) hostPort() (string, int) {
	host, p, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return c.Addr, 0
	}
	port, _ := strconv.Atoi(p)
	return host, port
}

// authorities are the host CAs trusted for the bastion.
func (c Config) authorities() []ssh.PublicKey {
	host, port := c.hostPort()
	return c.HostTrust.Authorities(host, port)
}

// pinnedKeys are the bastion's pins and the keys known for it.
func (c Config) pinnedKeys() []ssh.PublicKey {
	host, port := c.hostPort()
	return append(slices.Clip(c.HostKeys), c.HostTrust.Keys(host, port)...)
}

// certHostKeyAlgorithms are the host certificate algorithms offered, in
// the order of preferredHostKeyAlgos.
func certHostKeyAlgorithms() []string {
	return []string{ssh.CertAlgoED25519v01, ssh.CertAlgoECDSA256v01, ssh.CertAlgoECDSA384v01, ssh.CertAlgoECDSA521v01,
		ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01}
}

// hostKeyAlgorithms are the host key algorithms offered: certificates
// first when a host CA covers the bastion (so that a bastion with a host
// certificate presents it), then those of the pinned keys, then the rest.
func (c Config) hostKeyAlgorithms() []string {
	plain := hostKeyAlgorithms(c.pinnedKeys())
	if len(c.authorities()) == 0 {
		return plain
	}
	supported := ssh.SupportedAlgorithms().HostKeys
	var out []string
	for _, a := range certHostKeyAlgorithms() {
		if slices.Contains(supported, a) {
			out = append(out, a)
		}
	}
	return append(out, plain...)
}

// plainKey is the key a certificate certifies, or key itself.
func plainKey(key ssh.PublicKey) ssh.PublicKey {
	if c, ok := key.(*ssh.Certificate); ok {
		return c.Key
	}
	return key
}

// checkHostTrust decides a presented key by the host trust: a revoked key
// is refused, and a certificate is checked against the host CAs (with
// x/crypto's CertChecker). handled is false for a plain key that is not
// revoked: the pins decide it.
func checkHostTrust(cfg Config, remote net.Addr, key ssh.PublicKey) (handled bool, err error) {
	cert, isCert := key.(*ssh.Certificate)
	if cfg.HostTrust.Revoked(key) || (isCert && cfg.HostTrust.Revoked(cert.SignatureKey)) {
		e := &HostKeyRevokedError{Addr: cfg.Addr, Fingerprint: ssh.FingerprintSHA256(plainKey(key))}
		if isCert && cfg.HostTrust.Revoked(cert.SignatureKey) && !cfg.HostTrust.Revoked(key) {
			e.Authority = ssh.FingerprintSHA256(cert.SignatureKey)
		}
		return true, e
	}
	if !isCert {
		return false, nil
	}
	cas := cfg.authorities()
	if len(cas) == 0 {
		// Not offered without a host CA; should a bastion present one
		// anyway, nothing here can vouch for it.
		return true, &HostCertificateError{Addr: cfg.Addr, Reason: CertUntrustedAuthority, Cert: cert,
			Presented: ssh.FingerprintSHA256(cert.Key), PresentedKey: key}
	}
	checker := ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool { return containsKey(cas, auth) },
		IsRevoked: func(c *ssh.Certificate) bool {
			return cfg.HostTrust.Revoked(c) || cfg.HostTrust.Revoked(c.SignatureKey)
		},
		Clock: cfg.Clock,
	}
	// The principals are compared with the host name in lower case, as
	// OpenSSH's ssh does (it lower-cases the name it connects to).
	host, port := cfg.hostPort()
	if cerr := checker.CheckHostKey(net.JoinHostPort(certHostName(host), strconv.Itoa(port)), remote, key); cerr != nil {
		return true, &HostCertificateError{Addr: cfg.Addr, Reason: certReason(cfg, cert, cas), Cert: cert,
			Presented: ssh.FingerprintSHA256(cert.Key), PresentedKey: key, Now: cfg.Clock(), Err: cerr}
	}
	return true, nil
}

// certReason names why CertChecker refused cert, by the same checks in the
// same order (CertChecker's own errors are plain text).
func certReason(cfg Config, cert *ssh.Certificate, cas []ssh.PublicKey) CertReason {
	host, _ := cfg.hostPort()
	host = certHostName(host)
	now := cfg.Clock().Unix()
	switch {
	case cert.CertType != ssh.HostCert:
		return CertNotHost
	case !containsKey(cas, cert.SignatureKey):
		return CertUntrustedAuthority
	case !slices.Contains(cert.ValidPrincipals, host):
		return CertWrongPrincipal
	case int64(cert.ValidAfter) < 0 || now < int64(cert.ValidAfter):
		return CertNotYetValid
	case cert.ValidBefore != ssh.CertTimeInfinity && (now >= int64(cert.ValidBefore) || int64(cert.ValidBefore) < 0):
		return CertExpired
	}
	return CertInvalid
}

// certHostName is host as a host certificate's principals are compared
// with: in lower case, as OpenSSH's ssh connects to it.
func certHostName(host string) string { return strings.ToLower(host) }

func containsKey(keys []ssh.PublicKey, k ssh.PublicKey) bool {
	b := k.Marshal()
	for _, x := range keys {
		if bytes.Equal(x.Marshal(), b) {
			return true
		}
	}
	return false
}

// CertReason is why a host certificate was refused.
type CertReason string

// Reasons a host certificate is refused.
const (
	// CertMissing: a host CA covers the bastion, but it presented a plain
	// key that is not pinned.
	CertMissing CertReason = "no_certificate"
	// CertUntrustedAuthority: no host CA trusted for the bastion signed it.
	CertUntrustedAuthority CertReason = "untrusted_authority"
	// CertWrongPrincipal: the certificate does not name the bastion.
	CertWrongPrincipal CertReason = "wrong_principal"
	// CertExpired: the certificate's validity ended.
	CertExpired CertReason = "expired"
	// CertNotYetValid: the certificate's validity has not begun.
	CertNotYetValid CertReason = "not_yet_valid"
	// CertNotHost: it is a user certificate, not a host certificate.
	CertNotHost CertReason = "not_a_host_certificate"
	// CertInvalid: its signature or options are not valid.
	CertInvalid CertReason = "invalid"
)

// HostCertificateError means the bastion is covered by a host CA
// (@cert-authority) and did not present a host certificate that the CA
// vouches for. The tunnel fails closed: no credentials were sent.
type HostCertificateError struct {
	// Addr is the bastion's host:port.
	Addr   string
	Reason CertReason
	// Cert is the certificate presented (nil for CertMissing).
	Cert *ssh.Certificate
	// Presented is the fingerprint of the key presented (the certified
	// key of a certificate).
	Presented    string
	PresentedKey ssh.PublicKey
	// Now is the time the certificate was checked at.
	Now time.Time
	// Err is x/crypto's refusal, if any.
	Err error
}

// Error says what was wrong with the certificate and what to do.
func (e *HostCertificateError) Error() string {
	host, _, _ := net.SplitHostPort(e.Addr)
	var what string
	switch e.Reason {
	case CertMissing:
		return fmt.Sprintf("SSH bastion %s presented the plain host key %s, but a host CA (@cert-authority) is trusted for it, "+
			"so a host certificate was expected: give the bastion a host certificate signed by that CA (HostCertificate in "+
			"its sshd_config), or pin this key with --ssh-known-host if it is the bastion's", e.Addr, e.Presented)
	case CertUntrustedAuthority:
		what = fmt.Sprintf("it was signed by CA %s, which is not trusted for %s", ssh.FingerprintSHA256(e.Cert.SignatureKey), host)
	case CertWrongPrincipal:
		what = fmt.Sprintf("it is for %s, not for %s (the name pgrelay connects to, in lower case)", principals(e.Cert), certHostName(host))
	case CertExpired:
		what = fmt.Sprintf("it expired at %s (now %s)", certTime(e.Cert.ValidBefore), e.Now.UTC().Format(time.RFC3339))
	case CertNotYetValid:
		what = fmt.Sprintf("it is valid only from %s (now %s)", certTime(e.Cert.ValidAfter), e.Now.UTC().Format(time.RFC3339))
	case CertNotHost:
		what = "it is a user certificate, not a host certificate"
	default:
		what = fmt.Sprintf("it is not valid: %v", e.Err)
	}
	return fmt.Sprintf("SSH bastion %s presented a host certificate that was refused: %s; renew the bastion's host "+
		"certificate (ssh-keygen -s HOST_CA -h -n %s ...) or correct the connection's host authorities", e.Addr, what, certHostName(host))
}

// Unwrap returns x/crypto's refusal.
func (e *HostCertificateError) Unwrap() error { return e.Err }

func principals(c *ssh.Certificate) string {
	if len(c.ValidPrincipals) == 0 {
		return "no host name"
	}
	return strings.Join(c.ValidPrincipals, ", ")
}

func certTime(t uint64) string {
	if t == ssh.CertTimeInfinity {
		return "forever"
	}
	return time.Unix(int64(t), 0).UTC().Format(time.RFC3339)
}

// HostKeyRevokedError means the bastion presented a revoked key (@revoked),
// or a host certificate signed by a revoked CA. The tunnel fails closed.
type HostKeyRevokedError struct {
	// Addr is the bastion's host:port.
	Addr string
	// Fingerprint is the presented key's fingerprint.
	Fingerprint string
	// Authority is the revoked CA's fingerprint, when the CA is what is
	// revoked.
	Authority string
}

// Error names the revoked key.
func (e *HostKeyRevokedError) Error() string {
	if e.Authority != "" {
		return fmt.Sprintf("SSH bastion %s presented a host certificate signed by the revoked CA %s: refused; "+
			"the bastion needs a certificate from a CA that is not revoked", e.Addr, e.Authority)
	}
	return fmt.Sprintf("SSH bastion %s presented the revoked host key %s: refused; the key is listed @revoked, "+
		"so the bastion (or someone in the path) uses a key that must no longer be trusted", e.Addr, e.Fingerprint)
}

// signerSet offers the client keys and remembers which one the bastion
// accepted: x/crypto signs only with a key the bastion said it would take,
// so after a successful login the last key that signed is the one.
type signerSet struct {
	signers []ssh.Signer
	last    atomic.Int32
}

func newSignerSet(cfg Config) *signerSet {
	s := &signerSet{}
	s.last.Store(-1)
	for i, sg := range []ssh.Signer{cfg.Signer, cfg.Fallback} {
		if sg != nil {
			s.signers = append(s.signers, recordingSigner(sg, func() { s.last.Store(int32(i)) }))
		}
	}
	return s
}

func (s *signerSet) list() ([]ssh.Signer, error) { return s.signers, nil }

// fallbackUsed reports whether the last key that signed was the fallback.
func (s *signerSet) fallbackUsed() bool { return s.last.Load() == 1 }

// recordingSigner calls signed whenever sg signs, keeping the interfaces
// x/crypto looks for (algorithm signers, certificates).
func recordingSigner(sg ssh.Signer, signed func()) ssh.Signer {
	if ms, ok := sg.(ssh.MultiAlgorithmSigner); ok {
		return &recordingMultiSigner{MultiAlgorithmSigner: ms, signed: signed}
	}
	if as, ok := sg.(ssh.AlgorithmSigner); ok {
		return &recordingAlgoSigner{AlgorithmSigner: as, signed: signed}
	}
	return &recordingPlainSigner{Signer: sg, signed: signed}
}

type recordingPlainSigner struct {
	ssh.Signer
	signed func()
}

func (r *recordingPlainSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	r.signed()
	return r.Signer.Sign(rand, data)
}

type recordingAlgoSigner struct {
	ssh.AlgorithmSigner
	signed func()
}

func (r *recordingAlgoSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	r.signed()
	return r.AlgorithmSigner.Sign(rand, data)
}

func (r *recordingAlgoSigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	r.signed()
	return r.AlgorithmSigner.SignWithAlgorithm(rand, data, algorithm)
}

type recordingMultiSigner struct {
	ssh.MultiAlgorithmSigner
	signed func()
}

func (r *recordingMultiSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	r.signed()
	return r.MultiAlgorithmSigner.Sign(rand, data)
}

func (r *recordingMultiSigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	r.signed()
	return r.MultiAlgorithmSigner.SignWithAlgorithm(rand, data, algorithm)
}
