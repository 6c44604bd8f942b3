package sshkey

import (
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha1" // known_hosts' hashed names are HMAC-SHA1
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Limits of a given host key text.
const (
	// MaxKnownHostLen is the longest host key text accepted, in bytes.
	MaxKnownHostLen = 16 << 10
	// MaxKnownHostKeys is the most keys one text may pin.
	MaxKnownHostKeys = 16
	// MinRSAHostKeyBits is the smallest RSA host key accepted.
	MinRSAHostKeyBits = 2048
)

// KnownHostAccepted says what ParseKnownHosts accepts, for messages.
const KnownHostAccepted = "accepted is the bastion's public host key, either as in its /etc/ssh/ssh_host_*_key.pub " +
	`("ssh-ed25519 AAAA..."), or as a known_hosts line ("bastion.example.com ssh-ed25519 AAAA..." or ` +
	`"[bastion.example.com]:2222 ssh-ed25519 AAAA..."); one key per line`

// ParseKnownHosts reads the host keys of the bastion at host:port given by
// a person: lines holding a public key as in a .pub file ("ssh-ed25519
// AAAA... comment") or a known_hosts line ("host ssh-ed25519 AAAA...",
// "[host]:port ..."). Blank lines and # comments are skipped. A known_hosts
// line must name the bastion as known_hosts writes it (host, or [host]:port
// for a port other than 22), plainly, hashed (|1|salt|hash) or by a pattern
// that matches it and no negated pattern that does. Fingerprints, certificates,
// revoked or CA markers, DSA keys and RSA keys under 2048 bits are refused.
// The error says what is accepted.
func ParseKnownHosts(text, host string, port int) ([]ssh.PublicKey, error) {
	if len(text) > MaxKnownHostLen {
		return nil, fmt.Errorf("too long (%d bytes): at most %d bytes; %s", len(text), MaxKnownHostLen, KnownHostAccepted)
	}
	if strings.Contains(text, "PRIVATE KEY") {
		// Never echoed: a line of it would be a piece of the key.
		return nil, errors.New("this is a private key, which must not leave the bastion: give its public key (the .pub file beside it); " +
			KnownHostAccepted)
	}
	bastion := bastionName{host: host, port: port, known: knownhosts.Normalize(net.JoinHostPort(host, strconv.Itoa(port)))}
	var keys []ssh.PublicKey
	var problems []string
	n, lines := 0, 0
	for line := range strings.SplitSeq(text, "\n") {
		n++
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines++
		k, err := parseKnownHostLine(line, bastion)
		if err != nil {
			problems = append(problems, fmt.Sprintf("line %d: %v", n, err))
			continue
		}
		keys = append(keys, k)
	}
	if len(problems) > 0 {
		if lines == 1 {
			_, problems[0], _ = strings.Cut(problems[0], ": ") // no line number for one line
		}
		return nil, errors.New(strings.Join(problems, "; ") + "; " + KnownHostAccepted)
	}
	switch {
	case len(keys) == 0:
		return nil, errors.New("no host key found: " + KnownHostAccepted)
	case len(keys) > MaxKnownHostKeys:
		return nil, fmt.Errorf("%d keys: at most %d", len(keys), MaxKnownHostKeys)
	}
	return keys, nil
}

func parseKnownHostLine(line string, bastion bastionName) (ssh.PublicKey, error) {
	if strings.HasPrefix(line, "SHA256:") || strings.HasPrefix(line, "MD5:") {
		return nil, fmt.Errorf("%q is a fingerprint, which cannot be pinned: it does not say which key type to ask "+
			"the bastion for. Give the key itself (on the bastion: cat /etc/ssh/ssh_host_ed25519_key.pub). "+
			"To approve a key by its fingerprint instead, leave this empty, run the server with --host-key-policy approve, "+
			"connect once, and approve the key with `pgrelay connection trust-host-key NAME --fingerprint %s`", line, line)
	}
	var key ssh.PublicKey
	if fields := strings.Fields(line); len(fields) >= 2 && isKeyType(fields[0]) {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			return nil, fmt.Errorf("not a valid public key: %w", err)
		}
		key = k
	} else {
		marker, hosts, k, _, _, err := ssh.ParseKnownHosts([]byte(line))
		if errors.Is(err, io.EOF) {
			// x/crypto's way of saying it found no key in the line.
			return nil, fmt.Errorf("%q is neither a public key nor a known_hosts line", truncate(line, 16))
		}
		if err != nil {
			return nil, fmt.Errorf("neither a public key nor a known_hosts line: %w", err)
		}
		if marker != "" {
			return nil, fmt.Errorf("known_hosts lines with the marker @%s are not accepted here: give them as the "+
				"connection's host authorities (--ssh-host-authority, ssh_tunnel.host_authorities)", marker)
		}
		if err := checkHosts(hosts, bastion); err != nil {
			return nil, err
		}
		key = k
	}
	return key, checkHostKey(key)
}

// isKeyType reports whether s names a public key format.
func isKeyType(s string) bool {
	return strings.HasPrefix(s, "ssh-") || strings.HasPrefix(s, "ecdsa-sha2-") || strings.HasPrefix(s, "sk-")
}

// bastionName is the bastion a known_hosts line must name: its host and
// port, and its name as known_hosts writes it (host, or [host]:port).
type bastionName struct {
	host  string
	port  int
	known string
}

// checkHosts checks that a known_hosts line is for the bastion, as ssh
// reads the line: one of its names is the bastion's (plain, hashed, or a
// pattern that matches it) and no negated pattern matches it.
func checkHosts(hosts []string, bastion bastionName) error {
	matched := false
	var plain, patterns []string
	hashed := 0
	for _, h := range hosts {
		switch {
		case strings.HasPrefix(h, "|"):
			hashed++
			if hashedNameIs(h, bastion.known) {
				matched = true
			}
		case strings.HasPrefix(h, "!"):
			if (KnownHostLine{Patterns: []string{strings.TrimPrefix(h, "!")}}).Matches(bastion.host, bastion.port) {
				return fmt.Errorf("the line excludes this bastion (%s): its pattern %s matches %s", h, h, bastion.known)
			}
		case strings.ContainsAny(h, "*?"):
			patterns = append(patterns, h)
			if (KnownHostLine{Patterns: []string{h}}).Matches(bastion.host, bastion.port) {
				matched = true
			}
		default:
			if strings.EqualFold(h, bastion.known) {
				matched = true
			}
			plain = append(plain, h)
		}
	}
	if matched {
		return nil
	}
	var names []string
	names = append(names, plain...)
	names = append(names, patterns...)
	if hashed > 0 {
		names = append(names, fmt.Sprintf("%d hashed name(s) of other hosts", hashed))
	}
	return fmt.Errorf("the line is for %s, not for this bastion, which known_hosts names %s (ssh-keygen -F %s -f FILE prints its lines)",
		strings.Join(names, ", "), bastion.known, bastion.known)
}

// hashedNameIs reports whether a hashed known_hosts name (|1|salt|hash,
// HMAC-SHA1 of the name keyed with the salt, as ssh-keygen -H writes it)
// is name's.
func hashedNameIs(hashed, name string) bool {
	parts := strings.Split(hashed, "|")
	if len(parts) != 4 || parts[0] != "" || parts[1] != "1" {
		return false
	}
	salt, err1 := base64.StdEncoding.DecodeString(parts[2])
	sum, err2 := base64.StdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil {
		return false
	}
	mac := hmac.New(sha1.New, salt)
	mac.Write([]byte(name))
	return hmac.Equal(mac.Sum(nil), sum)
}

// checkHostKey refuses key types pgrelay does not accept as host keys.
func checkHostKey(key ssh.PublicKey) error {
	switch key.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521:
		return nil
	case ssh.KeyAlgoRSA:
		if ck, ok := key.(ssh.CryptoPublicKey); ok {
			if rk, ok := ck.CryptoPublicKey().(*rsa.PublicKey); ok && rk.N.BitLen() < MinRSAHostKeyBits {
				return fmt.Errorf("the RSA key has %d bits: at least %d are accepted", rk.N.BitLen(), MinRSAHostKeyBits)
			}
		}
		return nil
	case ssh.InsecureKeyAlgoDSA:
		return errors.New("DSA (ssh-dss) host keys are not accepted: give the bastion's ed25519, ECDSA or RSA key")
	}
	if _, ok := key.(*ssh.Certificate); ok {
		return errors.New("certificates are not accepted: give the bastion's plain host key")
	}
	return fmt.Errorf("%s keys are not accepted as host keys: give the bastion's ed25519, ECDSA or RSA key", key.Type())
}

// truncate shortens s to at most n bytes (at a rune boundary), marking it.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
