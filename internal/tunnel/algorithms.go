package tunnel

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// The algorithms pgrelay offers a bastion are set explicitly, rather than
// taken from x/crypto's defaults, which still include SHA-1 key exchange
// (diffie-hellman-group14-sha1), SHA-1 MACs (hmac-sha1, hmac-sha1-96) and
// ssh-rsa (SHA-1) host key signatures for compatibility. A bastion that
// offers none of these lists' algorithms for some part of the handshake is
// refused with an [*AlgorithmError].

// keyExchanges lists the key exchange algorithms in order of preference:
// the post-quantum hybrid ML-KEM-768 with X25519 first, then X25519 (x/crypto
// also offers its older name curve25519-sha256@libssh.org), the NIST curves,
// and 4096-bit Diffie-Hellman with SHA-512 for servers without elliptic
// curves.
func keyExchanges() []string {
	return []string{
		ssh.KeyExchangeMLKEM768X25519,
		ssh.KeyExchangeCurve25519,
		ssh.KeyExchangeECDHP256,
		ssh.KeyExchangeECDHP384,
		ssh.KeyExchangeECDHP521,
		ssh.KeyExchangeDH16SHA512,
	}
}

// curve25519LibSSH is the pre-standard name of curve25519-sha256, which
// x/crypto offers alongside it.
const curve25519LibSSH = "curve25519-sha256@libssh.org"

// Ciphers in the order offered to the bastion: AEAD ciphers first (AES-GCM
// is hardware-accelerated on amd64 and arm64, ChaCha20-Poly1305 is fast
// everywhere else), then the CTR modes for older servers. No CBC modes, no
// RC4, no 3DES.
func preferredCiphers() []string {
	return []string{
		ssh.CipherAES128GCM,
		ssh.CipherChaCha20Poly1305,
		ssh.CipherAES256GCM,
		ssh.CipherAES128CTR,
		ssh.CipherAES256CTR,
	}
}

// macs lists the MACs (used only with the CTR ciphers; the AEAD ciphers
// authenticate by themselves): SHA-2 only, encrypt-then-MAC first.
func macs() []string {
	return []string{
		ssh.HMACSHA256ETM,
		ssh.HMACSHA512ETM,
		ssh.HMACSHA256,
		ssh.HMACSHA512,
	}
}

// aead reports whether a cipher authenticates by itself (no MAC is
// negotiated with it).
func aead(cipher string) bool {
	switch cipher {
	case ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305:
		return true
	}
	return false
}

// Host key algorithms in order of preference when nothing is pinned: no
// ssh-rsa (SHA-1 signatures) and no ssh-dss.
func preferredHostKeyAlgos() []string {
	return []string{
		ssh.KeyAlgoED25519,
		ssh.KeyAlgoECDSA256,
		ssh.KeyAlgoECDSA384,
		ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoRSASHA512,
		ssh.KeyAlgoRSASHA256,
	}
}

// hostKeyAlgorithms lists the host key algorithms to offer: those of the
// pinned keys first, so that a bastion with several host keys presents a
// pinned one, then the rest. Certificates are not offered: keys are pinned.
// An RSA key is asked for with SHA-2 signatures only.
func hostKeyAlgorithms(pinned []ssh.PublicKey) []string {
	supported := ssh.SupportedAlgorithms().HostKeys
	var out []string
	add := func(algo string) {
		if !slices.Contains(out, algo) && slices.Contains(supported, algo) {
			out = append(out, algo)
		}
	}
	for _, k := range pinned {
		for _, a := range keyAlgorithms(k) {
			add(a)
		}
	}
	for _, a := range preferredHostKeyAlgos() {
		add(a)
	}
	return out
}

// keyAlgorithms are the host key algorithms pgrelay accepts a key with:
// an RSA key with SHA-2 signatures only.
func keyAlgorithms(k ssh.PublicKey) []string {
	if k.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return []string{k.Type()}
}

// pinnedNotOffered returns the algorithms pgrelay accepts for the pinned
// keys when the bastion's offer (its host key algorithms) has none of
// them: the bastion cannot present a pinned key then, whatever keys it
// has. Nil when it offers one, or when its offer was not seen.
func pinnedNotOffered(pinned []ssh.PublicKey, offer *kexInit) []string {
	if offer == nil || len(pinned) == 0 {
		return nil
	}
	var algos []string
	for _, k := range pinned {
		for _, a := range keyAlgorithms(plainKey(k)) {
			if slices.Contains(offer.ServerHostKeyAlgos, a) {
				return nil
			}
			if !slices.Contains(algos, a) {
				algos = append(algos, a)
			}
		}
	}
	return algos
}

// algorithmConfig is the algorithm part of the SSH client configuration.
func algorithmConfig() ssh.Config {
	return ssh.Config{
		KeyExchanges: keyExchanges(),
		Ciphers:      preferredCiphers(),
		MACs:         macs(),
	}
}

// Negotiated is what the SSH key exchange with a bastion settled on.
type Negotiated struct {
	// ServerVersion is the bastion's identification string, such as
	// "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3".
	ServerVersion string `json:"server_version"`
	// KeyExchange is the key exchange algorithm, such as curve25519-sha256.
	KeyExchange string `json:"key_exchange"`
	// HostKeyAlgorithm is the host key signature algorithm, such as
	// ssh-ed25519 or rsa-sha2-512.
	HostKeyAlgorithm string `json:"host_key_algorithm"`
	// Cipher is the cipher from pgrelay to the bastion (the other direction
	// is ServerCipher when it differs).
	Cipher       string `json:"cipher"`
	ServerCipher string `json:"server_cipher,omitempty"`
	// MAC is the MAC from pgrelay to the bastion; empty with an AEAD
	// cipher, which authenticates by itself.
	MAC       string `json:"mac,omitempty"`
	ServerMAC string `json:"server_mac,omitempty"`
}

// newNegotiated reads the negotiated algorithms of a connection.
func newNegotiated(version []byte, a ssh.NegotiatedAlgorithms) Negotiated {
	n := Negotiated{
		ServerVersion:    printable(string(version)),
		KeyExchange:      a.KeyExchange,
		HostKeyAlgorithm: a.HostKey,
		Cipher:           a.Write.Cipher,
		MAC:              a.Write.MAC,
	}
	if a.Read.Cipher != a.Write.Cipher {
		n.ServerCipher = a.Read.Cipher
	}
	if a.Read.MAC != a.Write.MAC {
		n.ServerMAC = a.Read.MAC
	}
	return n
}

// String describes the algorithms in one line.
func (n Negotiated) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "key exchange %s, host key %s, cipher %s", n.KeyExchange, n.HostKeyAlgorithm, n.Cipher)
	if n.ServerCipher != "" {
		fmt.Fprintf(&b, " (from the bastion: %s)", n.ServerCipher)
	}
	switch {
	case n.MAC != "":
		fmt.Fprintf(&b, ", MAC %s", n.MAC)
		if n.ServerMAC != "" {
			fmt.Fprintf(&b, " (from the bastion: %s)", n.ServerMAC)
		}
	case aead(n.Cipher):
		b.WriteString(" (authenticated encryption: no separate MAC)")
	}
	if n.ServerVersion != "" {
		fmt.Fprintf(&b, "; server %s", n.ServerVersion)
	}
	return b.String()
}

// printable drops control characters from text a server sent.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// AlgorithmError means the bastion offers no algorithm that pgrelay accepts
// for one part of the SSH handshake: it offers only algorithms pgrelay
// refuses as insecure (SHA-1 key exchange or MACs, ssh-rsa or DSA host
// keys, CBC ciphers) or none it knows. It is the cause of a
// [*HandshakeError]; no credentials were sent.
type AlgorithmError struct {
	// Addr is the bastion's host:port.
	Addr string
	// What is the part of the handshake: "key exchange", "host key",
	// "cipher" or "MAC".
	What string
	// Offered are the bastion's algorithms for it.
	Offered []string
	// Accepted are pgrelay's.
	Accepted []string
	// ServerVersion is the bastion's identification string.
	ServerVersion string
}

// Error names both lists and the sshd_config setting to change.
func (e *AlgorithmError) Error() string {
	setting := map[string]string{"key exchange": "KexAlgorithms", "host key": "HostKeyAlgorithms (and a HostKey of that type)",
		"cipher": "Ciphers", "MAC": "MACs"}[e.What]
	return fmt.Sprintf("SSH bastion %s offers no %s algorithm that pgrelay accepts: it offers %s; pgrelay accepts %s "+
		"(SHA-1 key exchanges and MACs, ssh-rsa and DSA host keys and CBC ciphers are refused as insecure): "+
		"enable one of pgrelay's in the bastion's sshd_config (%s)",
		e.Addr, e.What, strings.Join(e.Offered, ", "), strings.Join(e.Accepted, ", "), setting)
}

// kexInit is the SSH_MSG_KEXINIT message (RFC 4253 section 7.1), which each
// side sends in the clear at the start of the handshake.
type kexInit struct {
	Cookie                  [16]byte `sshtype:"20"`
	KexAlgos                []string
	ServerHostKeyAlgos      []string
	CiphersClientServer     []string
	CiphersServerClient     []string
	MACsClientServer        []string
	MACsServerClient        []string
	CompressionClientServer []string
	CompressionServerClient []string
	LanguagesClientServer   []string
	LanguagesServerClient   []string
	FirstKexFollows         bool
	Reserved                uint32
}

// Limits of what the offer reader keeps: RFC 4253 allows packets of 35000
// bytes, and lines before the version line of 255 bytes each.
const (
	maxKexInitPacket = 35000
	maxPreamble      = 8 << 10
)

// offerReader watches the bytes the bastion sends at the start of the
// connection for its version line and its KEXINIT, so that a failed
// negotiation can say which algorithms the bastion offered. x/crypto only
// reports that as text. It is fed from the SSH library's reader goroutine
// and read after the handshake ended.
type offerReader struct {
	mu      sync.Mutex
	buf     []byte
	version string
	offer   *kexInit
	done    bool
}

// feed adds bytes read from the bastion. It reports whether it wants more.
func (o *offerReader) feed(p []byte) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done {
		return false
	}
	o.buf = append(o.buf, p...)
	for o.version == "" {
		i := strings.IndexByte(string(o.buf), '\n')
		if i < 0 {
			if len(o.buf) > maxPreamble {
				o.stop()
			}
			return !o.done
		}
		line := strings.TrimRight(string(o.buf[:i]), "\r")
		o.buf = o.buf[i+1:]
		if strings.HasPrefix(line, "SSH-") {
			o.version = printable(line)
		}
	}
	if len(o.buf) < 5 {
		return true
	}
	length := binary.BigEndian.Uint32(o.buf)
	if length < 2 || length > maxKexInitPacket {
		o.stop()
		return false
	}
	if len(o.buf) < 4+int(length) {
		return true
	}
	padding := int(o.buf[4])
	if padding+1 < int(length) {
		var msg kexInit
		if err := ssh.Unmarshal(o.buf[5:4+int(length)-padding], &msg); err == nil {
			o.offer = &msg
		}
	}
	o.stop()
	return false
}

func (o *offerReader) stop() {
	o.done = true
	o.buf = nil
}

// result returns the version line and the KEXINIT, if they were seen.
func (o *offerReader) result() (string, *kexInit) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.version, o.offer
}

// firstCommon is the first of ours that theirs has, as SSH chooses ("" for
// none).
func firstCommon(ours, theirs []string) string {
	for _, a := range ours {
		if slices.Contains(theirs, a) {
			return a
		}
	}
	return ""
}

// noCommonAlgorithm compares the bastion's offer with ours the way SSH
// negotiates (RFC 4253 section 7.1) and returns an [*AlgorithmError] for
// the first part without a common algorithm, or nil.
func noCommonAlgorithm(addr, version string, offer *kexInit, hostKeyAlgos []string) error {
	if offer == nil {
		return nil
	}
	kex := slices.Insert(keyExchanges(), slices.Index(keyExchanges(), ssh.KeyExchangeCurve25519)+1, curve25519LibSSH)
	theirKex := slices.DeleteFunc(slices.Clone(offer.KexAlgos), func(a string) bool {
		// Extension markers, not key exchanges.
		return a == "ext-info-s" || strings.HasPrefix(a, "kex-strict-")
	})
	fail := func(what string, offered, accepted []string) error {
		return &AlgorithmError{Addr: addr, What: what, Offered: offered, Accepted: accepted, ServerVersion: version}
	}
	if firstCommon(kex, theirKex) == "" {
		return fail("key exchange", theirKex, kex)
	}
	if firstCommon(hostKeyAlgos, offer.ServerHostKeyAlgos) == "" {
		return fail("host key", offer.ServerHostKeyAlgos, hostKeyAlgos)
	}
	for _, dir := range []struct{ ciphers, macs []string }{
		{offer.CiphersClientServer, offer.MACsClientServer},
		{offer.CiphersServerClient, offer.MACsServerClient},
	} {
		cipher := firstCommon(preferredCiphers(), dir.ciphers)
		if cipher == "" {
			return fail("cipher", dir.ciphers, preferredCiphers())
		}
		if !aead(cipher) && firstCommon(macs(), dir.macs) == "" {
			return fail("MAC", dir.macs, macs())
		}
	}
	return nil
}
