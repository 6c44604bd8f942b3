package tunnel

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"slices"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestOfferedAlgorithmsAreModern: nothing pgrelay offers is on x/crypto's
// insecure lists or uses SHA-1 or DSA, and x/crypto implements all of it.
func TestOfferedAlgorithmsAreModern(t *testing.T) {
	insecure := ssh.InsecureAlgorithms()
	supported := ssh.SupportedAlgorithms()
	rsaKey := newRSAPublicKey(t)
	for _, tc := range []struct {
		name      string
		offered   []string
		insecure  []string
		supported []string
		banned    []string
	}{
		{"key exchange", keyExchanges(), insecure.KeyExchanges, supported.KeyExchanges,
			[]string{ssh.InsecureKeyExchangeDH14SHA1, ssh.InsecureKeyExchangeDH1SHA1, ssh.InsecureKeyExchangeDHGEXSHA1}},
		{"cipher", preferredCiphers(), insecure.Ciphers, supported.Ciphers, []string{ssh.InsecureCipherAES128CBC}},
		{"MAC", macs(), insecure.MACs, supported.MACs, []string{ssh.HMACSHA1, ssh.InsecureHMACSHA196}},
		{"host key", hostKeyAlgorithms(nil), insecure.HostKeys, supported.HostKeys, []string{ssh.KeyAlgoRSA, ssh.InsecureKeyAlgoDSA}},
		{"host key (RSA pinned)", hostKeyAlgorithms([]ssh.PublicKey{rsaKey}), insecure.HostKeys, supported.HostKeys, []string{ssh.KeyAlgoRSA}},
	} {
		if len(tc.offered) == 0 {
			t.Errorf("%s: nothing offered", tc.name)
		}
		for _, a := range tc.offered {
			if slices.Contains(tc.insecure, a) || slices.Contains(tc.banned, a) {
				t.Errorf("%s: %s is offered", tc.name, a)
			}
			if !slices.Contains(tc.supported, a) {
				t.Errorf("%s: %s is not implemented by x/crypto", tc.name, a)
			}
		}
	}
	cfg := algorithmConfig()
	if !slices.Equal(cfg.KeyExchanges, keyExchanges()) || !slices.Equal(cfg.Ciphers, preferredCiphers()) || !slices.Equal(cfg.MACs, macs()) {
		t.Errorf("algorithmConfig() = %+v does not set every list", cfg)
	}
	if keyExchanges()[0] != ssh.KeyExchangeMLKEM768X25519 {
		t.Errorf("first key exchange = %s, want the post-quantum hybrid", keyExchanges()[0])
	}
}

// TestOfferReader feeds a bastion's first bytes a few at a time.
func TestOfferReader(t *testing.T) {
	msg := kexInit{KexAlgos: []string{"diffie-hellman-group14-sha1", "kex-strict-s-v00@openssh.com"},
		ServerHostKeyAlgos: []string{"ssh-ed25519"}, CiphersClientServer: []string{"aes128-ctr"},
		CiphersServerClient: []string{"aes128-ctr"}, MACsClientServer: []string{"hmac-sha1"},
		MACsServerClient: []string{"hmac-sha1"}, CompressionClientServer: []string{"none"},
		CompressionServerClient: []string{"none"}}
	payload := ssh.Marshal(&msg)
	const padding = 7
	packet := binary.BigEndian.AppendUint32(nil, uint32(len(payload)+padding+1))
	packet = append(packet, padding)
	packet = append(packet, payload...)
	packet = append(packet, make([]byte, padding)...)
	stream := append([]byte("a banner line\r\nSSH-2.0-OpenSSH_9.2p1 Debian\x01\r\n"), packet...)
	stream = append(stream, "encrypted stuff follows"...)

	o := &offerReader{}
	more := true
	for i := 0; i < len(stream) && more; i += 3 {
		more = o.feed(stream[i:min(i+3, len(stream))])
	}
	version, offer := o.result()
	if more || offer == nil {
		t.Fatalf("offer not read (more=%v)", more)
	}
	if version != "SSH-2.0-OpenSSH_9.2p1 Debian" {
		t.Errorf("version = %q", version)
	}
	if !slices.Equal(offer.MACsClientServer, []string{"hmac-sha1"}) {
		t.Errorf("MACs = %v", offer.MACsClientServer)
	}
	err := noCommonAlgorithm("b:22", version, offer, hostKeyAlgorithms(nil))
	algErr, ok := err.(*AlgorithmError)
	if !ok || algErr.What != "key exchange" || !slices.Equal(algErr.Offered, []string{"diffie-hellman-group14-sha1"}) {
		t.Errorf("noCommonAlgorithm = %v, want key exchange offering only diffie-hellman-group14-sha1", err)
	}
	offer.KexAlgos = []string{ssh.KeyExchangeCurve25519}
	if err, ok := noCommonAlgorithm("b:22", version, offer, hostKeyAlgorithms(nil)).(*AlgorithmError); !ok || err.What != "MAC" {
		t.Errorf("with curve25519: %v, want the MAC refused", err)
	}
	offer.CiphersClientServer = []string{"aes128-ctr", ssh.CipherChaCha20Poly1305}
	offer.CiphersServerClient = offer.CiphersClientServer
	if err := noCommonAlgorithm("b:22", version, offer, hostKeyAlgorithms(nil)); err != nil {
		t.Errorf("with an AEAD cipher no MAC is needed, got %v", err)
	}

	// Garbage instead of SSH stops the reader without an offer.
	o = &offerReader{}
	for range 10 {
		if !o.feed(make([]byte, 1024)) {
			break
		}
	}
	if _, offer := o.result(); offer != nil || o.feed([]byte("SSH-2.0-x\r\n")) {
		t.Error("reader kept reading a stream without a version line")
	}
}

func newRSAPublicKey(t *testing.T) ssh.PublicKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
