package audit

import (
	"net/url"
	"strings"
)

// Masked replaces a secret value in a recorded command.
const Masked = "[redacted]"

// secretWords mark an option or variable whose value is a secret.
var secretWords = []string{"password", "passwd", "pwd", "secret", "token", "apikey", "api-key", "api_key",
	"private-key", "private_key", "credential", "auth"}

// MaskCommand returns a command's program and arguments with secret values
// masked: the value of an option or VAR=value whose name says it is a
// secret (--password=x, --password x, PGPASSWORD=x, --api-token x), the
// password of a URL (postgresql://user:pw@host), a pgrelay API token, and
// any of the given known secrets (such as the connection's password)
// wherever it appears.
func MaskCommand(argv []string, known ...string) []string {
	out := make([]string, len(argv))
	maskNext := false
	for i, a := range argv {
		switch {
		case maskNext:
			out[i], maskNext = Masked, false
			continue
		case i > 0 && strings.HasPrefix(a, "-") && !strings.Contains(a, "=") && secretName(strings.TrimLeft(a, "-")):
			out[i], maskNext = a, true
			continue
		}
		out[i] = maskArg(a, known)
	}
	return out
}

// maskArg masks the secret parts of one argument.
func maskArg(a string, known []string) string {
	for _, k := range known {
		if len(k) >= 4 && strings.Contains(a, k) {
			a = strings.ReplaceAll(a, k, Masked)
		}
	}
	if name, _, ok := strings.Cut(a, "="); ok && secretName(strings.TrimLeft(name, "-")) {
		return name + "=" + Masked
	}
	if strings.Contains(a, "pgr_") {
		a = maskTokens(a)
	}
	if strings.Contains(a, "://") && strings.Contains(a, "@") {
		a = maskURLs(a)
	}
	// libpq keyword/value strings: "host=h password=x".
	if strings.Contains(a, "=") && strings.Contains(a, " ") {
		fields := strings.Fields(a)
		changed := false
		for i, f := range fields {
			if name, _, ok := strings.Cut(f, "="); ok && secretName(name) {
				fields[i], changed = name+"="+Masked, true
			}
		}
		if changed {
			a = strings.Join(fields, " ")
		}
	}
	return a
}

// secretName reports whether an option or variable name says its value is
// a secret.
func secretName(name string) bool {
	n := strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// maskTokens masks pgrelay API tokens (pgr_ and 43 characters).
func maskTokens(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "pgr_")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		j := i + 4
		for j < len(s) && isTokenChar(s[j]) {
			j++
		}
		if j-i-4 >= 20 {
			b.WriteString(Masked)
		} else {
			b.WriteString(s[i:j])
		}
		s = s[j:]
	}
}

func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// maskURLs masks the password of each URL in s.
func maskURLs(s string) string {
	fields := strings.Fields(s)
	for i, f := range fields {
		start := strings.Index(f, "://")
		if start < 0 {
			continue
		}
		// Find the scheme's start: letters, digits, + - . before "://".
		j := start
		for j > 0 && (isTokenChar(f[j-1]) || f[j-1] == '+' || f[j-1] == '.') {
			j--
		}
		u, err := url.Parse(f[j:])
		if err != nil || u.User == nil {
			if at := strings.LastIndex(f, "@"); at > start {
				// Unparsable: mask everything between :// and @ after a colon.
				if c := strings.Index(f[start+3:at], ":"); c >= 0 {
					fields[i] = f[:start+3+c+1] + Masked + f[at:]
				}
			}
			continue
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
			fields[i] = f[:j] + strings.Replace(u.String(), "REDACTED", Masked, 1)
		}
	}
	return strings.Join(fields, " ")
}
