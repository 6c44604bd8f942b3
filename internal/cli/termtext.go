package cli

import (
	"github.com/pgrelay/pgrelay/internal/jsonesc"

	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// showControls returns s as it is safe to print to a terminal: every
// character a terminal would act on rather than show is written out in
// Go's escape syntax, so that text from a job's command or the database
// (a run's log, a step's error, a query's value) can neither move the
// cursor, rewrite or clear lines, set the window title nor write the
// clipboard (OSC 52).
//
//   - C0 controls other than \n and \t, ESC and DEL become \xNN (ESC is \x1b);
//   - C1 controls (U+0080 to U+009F, such as U+009B, an 8-bit CSI) become \u0080 to \u009f;
//   - a byte that is not part of valid UTF-8 becomes \xNN (0x9b alone is \x9b);
//   - a carriage return becomes \r, except right before \n, where \r\n stays a line end.
//
// Everything else, backslashes included, is kept as it is: the exact
// bytes are what --raw (and JSON or CSV output) give.
func showControls(s string) string {
	if !hasControls(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n' || r == '\t':
			b.WriteByte(s[i])
		case r == '\r' && strings.HasPrefix(s[i+1:], "\n"):
			b.WriteByte('\r')
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r <= 0x9f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// hasControls reports whether showControls would change s: s holds a
// control character other than \n and \t, or is not valid UTF-8.
func hasControls(s string) bool {
	ascii := true
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 0x80:
			ascii = false
		case c < 0x20 && c != '\n' && c != '\t', c == 0x7f:
			return true
		}
	}
	if ascii {
		return false
	}
	if !utf8.ValidString(s) {
		return true
	}
	for _, r := range s {
		if r >= 0x80 && r <= 0x9f {
			return true
		}
	}
	return false
}

// jsonLinesWriter writes JSON lines to w with their C1 controls and DEL
// escaped (see jsonesc.Controls), whole lines at a time: its writes may
// cut a line, and a character in it, anywhere (a bufio.Writer's do).
// What follows the last line end waits for the next write or Flush.
type jsonLinesWriter struct {
	w    io.Writer
	rest []byte // the start of a line not written yet
}

// Write implements io.Writer.
func (j *jsonLinesWriter) Write(p []byte) (int, error) {
	j.rest = append(j.rest, p...)
	end := bytes.LastIndexByte(j.rest, '\n')
	if end < 0 {
		return len(p), nil
	}
	_, err := j.w.Write(jsonesc.Controls(j.rest[:end+1]))
	j.rest = append(j.rest[:0], j.rest[end+1:]...)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what is left after the last line end.
func (j *jsonLinesWriter) Flush() error {
	if len(j.rest) == 0 {
		return nil
	}
	_, err := j.w.Write(jsonesc.Controls(j.rest))
	j.rest = j.rest[:0]
	return err
}
