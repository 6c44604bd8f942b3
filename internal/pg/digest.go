package pg

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Digest identifies a SQL text without revealing it, for the audit log and
// traces: the SHA-256 (first 16 bytes, hex) of the text with every literal
// (strings, dollar-quoted strings, numbers, bit and escape strings)
// replaced by "?", comments removed, white space collapsed and unquoted
// text in lower case. The same statement with other values has the same
// digest, and the digest of a statement cannot be searched for the values
// it held.
func Digest(sql string) string {
	sum := sha256.Sum256([]byte(Normalize(sql)))
	return hex.EncodeToString(sum[:16])
}

// Normalize returns sql as Digest hashes it: literals replaced by "?",
// comments removed, runs of white space as one space, unquoted text in
// lower case, quoted identifiers kept.
func Normalize(sql string) string {
	var b strings.Builder
	b.Grow(len(sql))
	space := false
	emit := func(s string) {
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteString(s)
	}
	n := len(sql)
	for i := 0; i < n; {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			space = true
			i++
		case c == '-' && i+1 < n && sql[i+1] == '-':
			for i < n && sql[i] != '\n' {
				i++
			}
			space = true
		case c == '/' && i+1 < n && sql[i+1] == '*':
			i = skipBlockComment(sql, i)
			space = true
		case c == '\'':
			i = skipQuoted(sql, i+1, false)
			emit("?")
		case c == '"':
			j := i + 1
			for j < n {
				if sql[j] == '"' {
					if j+1 < n && sql[j+1] == '"' {
						j += 2
						continue
					}
					j++
					break
				}
				j++
			}
			emit(sql[i:min(j, n)])
			i = j
		case c == '$' && i+1 < n && isDigit(sql[i+1]):
			// A parameter ($1): kept.
			j := i + 1
			for j < n && isDigit(sql[j]) {
				j++
			}
			emit(sql[i:j])
			i = j
		case c == '$':
			if end, ok := skipDollarQuoted(sql, i); ok {
				emit("?")
				i = end
				continue
			}
			emit("$")
			i++
		case isDigit(c) || c == '.' && i+1 < n && isDigit(sql[i+1]):
			j := i
			for j < n && (isDigit(sql[j]) || sql[j] == '.' || sql[j] == '_' || sql[j] == 'e' || sql[j] == 'E' ||
				(sql[j] == 'x' || sql[j] == 'X' || sql[j] == 'o' || sql[j] == 'O' || sql[j] == 'b' || sql[j] == 'B') && j == i+1 ||
				isHexDigit(sql[j]) && j > i+1 && (sql[i+1] == 'x' || sql[i+1] == 'X') ||
				(sql[j] == '+' || sql[j] == '-') && j > i && (sql[j-1] == 'e' || sql[j-1] == 'E')) {
				j++
			}
			emit("?")
			i = j
		case isIdentStart(c):
			j := i
			for j < n && isIdentChar(sql[j]) {
				j++
			}
			word := sql[i:j]
			// E'...', B'...', X'...', N'...', U&'...': a literal with a
			// prefix.
			if j < n && sql[j] == '\'' && len(word) == 1 && strings.ContainsRune("eEbBxXnN", rune(word[0])) {
				i = skipQuoted(sql, j+1, word[0] == 'e' || word[0] == 'E')
				emit("?")
				continue
			}
			if j+1 < n && sql[j] == '&' && sql[j+1] == '\'' && (word == "u" || word == "U") {
				i = skipQuoted(sql, j+2, false)
				emit("?")
				continue
			}
			emit(strings.ToLower(word))
			i = j
		default:
			emit(string(c))
			i++
		}
	}
	return b.String()
}

// skipQuoted returns the index after the string literal whose body starts
// at i (” is a quote; with backslashes, \' and \\ are escapes too).
func skipQuoted(sql string, i int, backslashes bool) int {
	n := len(sql)
	for i < n {
		switch {
		case backslashes && sql[i] == '\\':
			i += 2
		case sql[i] == '\'':
			if i+1 < n && sql[i+1] == '\'' {
				i += 2
				continue
			}
			return i + 1
		default:
			i++
		}
	}
	return n
}

// skipBlockComment returns the index after the (nested) comment at i.
func skipBlockComment(sql string, i int) int {
	depth := 0
	n := len(sql)
	for i < n {
		switch {
		case i+1 < n && sql[i] == '/' && sql[i+1] == '*':
			depth++
			i += 2
		case i+1 < n && sql[i] == '*' && sql[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return n
}

// skipDollarQuoted returns the index after the dollar-quoted string at i
// ($$...$$ or $tag$...$tag$), and false when there is none.
func skipDollarQuoted(sql string, i int) (int, bool) {
	j := i + 1
	for j < len(sql) && sql[j] != '$' {
		if !isIdentChar(sql[j]) || sql[j] == '$' {
			return 0, false
		}
		j++
	}
	if j >= len(sql) {
		return 0, false
	}
	tag := sql[i : j+1]
	end := strings.Index(sql[j+1:], tag)
	if end < 0 {
		return len(sql), true
	}
	return j + 1 + end + len(tag), true
}

func isDigit(c byte) bool    { return c >= '0' && c <= '9' }
func isHexDigit(c byte) bool { return isDigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}
func isIdentChar(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// CopiesFromStdin reports whether sql holds a COPY ... FROM STDIN, which
// waits for data from the client: a client that has none to send (a SQL
// step, a single query) would wait until its time limit. Comments and
// literals do not count.
func CopiesFromStdin(sql string) bool {
	for _, stmt := range statements(Normalize(sql)) {
		words := strings.Fields(strings.NewReplacer("(", " ( ", ")", " ) ").Replace(stmt))
		if len(words) == 0 || words[0] != "copy" {
			continue
		}
		for j := 1; j+1 < len(words); j++ {
			if words[j] == "from" && words[j+1] == "stdin" {
				return true
			}
		}
	}
	return false
}

// statements splits normalized SQL (see Normalize: no literals or
// comments left) at the semicolons outside quoted identifiers.
func statements(norm string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(norm); i++ {
		switch {
		case norm[i] == '"':
			quoted = !quoted
		case norm[i] == ';' && !quoted:
			out = append(out, norm[start:i])
			start = i + 1
		}
	}
	return append(out, norm[start:])
}
