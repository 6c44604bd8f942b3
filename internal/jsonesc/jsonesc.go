// Package jsonesc escapes what encoding/json leaves as it is but a
// terminal acts on: C1 controls (U+0080 to U+009F, such as U+009B, an
// 8-bit CSI) and DEL.
package jsonesc

import (
	"bytes"
	"fmt"
	"unicode/utf8"
)

// Controls returns encoded JSON b with its C1 controls and DEL written as
// \u escapes (encoding/json escapes only C0 controls): a terminal showing
// the JSON then acts on none of its characters. In valid JSON these occur
// only inside strings, where the escape means the same character, so the
// result decodes to the same values. b is returned as it is when it holds
// none.
func Controls(b []byte) []byte {
	if !bytes.ContainsFunc(b, isControl) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if isControl(r) {
			out = fmt.Appendf(out, `\u%04x`, r)
		} else {
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return out
}

func isControl(r rune) bool { return r == 0x7f || (r >= 0x80 && r <= 0x9f) }
