package diagnose

import (
	"encoding/binary"
	"io"
	"sync"
	"time"
)

// Authentication request codes of the 'R' message.
const (
	authOK        = 0
	authCleartext = 3
	authMD5       = 5
	authSASL      = 10
)

// authMethodName is require_auth's name of an authentication request
// code, or "" for one it does not name.
func authMethodName(code int32) string {
	switch code {
	case authCleartext:
		return "password"
	case authMD5:
		return "md5"
	case authSASL:
		return "scram-sha-256"
	case 7:
		return "gss"
	case 9:
		return "sspi"
	}
	return ""
}

// startupObserver reads the server's side of the startup exchange as it
// passes to pgx and notes when authentication succeeded (AuthenticationOk)
// and which method the server asked for. It stops looking at
// ReadyForQuery; the bytes pass through unchanged.
type startupObserver struct {
	r        io.Reader
	onAuthOK func()

	mu       sync.Mutex
	done     bool    // ReadyForQuery seen: stop parsing
	hdr      [5]byte // message type and length
	hdrN     int
	bodyLeft int
	code     [4]byte // first four body bytes of an 'R' message
	codeN    int
	method   int32 // first authentication request code other than OK
	authAt   time.Time
	seen     bool // the first message's type was read
	alien    bool // and it is none a PostgreSQL server answers a startup with
	first    byte // the first message's type
}

// Read reads from the server and observes what was read.
func (o *startupObserver) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	if n > 0 {
		o.observe(p[:n])
	}
	return n, err
}

// notPostgres reports whether the server's first message is one no
// PostgreSQL server (or pooler) answers a startup message with, and its
// first byte: the port is some other service's (an SSH server's banner
// starts with 'S', an HTTP answer with 'H').
func (o *startupObserver) notPostgres() (bool, byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.alien, o.first
}

// result returns when authentication succeeded (zero if it did not) and
// the method the server asked for (0: none, i.e. trust).
func (o *startupObserver) result() (time.Time, int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.authAt, o.method
}

func (o *startupObserver) observe(b []byte) {
	o.mu.Lock()
	authOKNow := false
	for len(b) > 0 && !o.done {
		if o.hdrN < len(o.hdr) {
			n := copy(o.hdr[o.hdrN:], b)
			o.hdrN += n
			b = b[n:]
			if o.hdrN < len(o.hdr) {
				break
			}
			if !o.seen {
				// A server answers a startup message with an
				// authentication request, an error, a protocol
				// version negotiation or a notice.
				o.seen, o.first = true, o.hdr[0]
				switch o.first {
				case 'R', 'E', 'v', 'N':
				default:
					o.alien, o.done = true, true
				}
				if o.done {
					break
				}
			}
			o.bodyLeft = int(binary.BigEndian.Uint32(o.hdr[1:])) - 4
			o.codeN = 0
			if o.bodyLeft < 0 {
				o.done = true // not the protocol we know: stop looking
				break
			}
		}
		if o.hdr[0] == 'R' && o.codeN < len(o.code) {
			n := copy(o.code[o.codeN:], b[:min(len(b), o.bodyLeft)])
			o.codeN += n
		}
		n := min(len(b), o.bodyLeft)
		o.bodyLeft -= n
		b = b[n:]
		if o.bodyLeft > 0 {
			break
		}
		// A whole message was seen.
		switch o.hdr[0] {
		case 'R':
			if o.codeN == len(o.code) {
				code := int32(binary.BigEndian.Uint32(o.code[:]))
				if code == authOK {
					if o.authAt.IsZero() {
						o.authAt = time.Now()
						authOKNow = true
					}
				} else if o.method == 0 {
					o.method = code
				}
			}
		case 'Z':
			o.done = true
		}
		o.hdrN = 0
	}
	o.mu.Unlock()
	if authOKNow && o.onAuthOK != nil {
		o.onAuthOK()
	}
}
