package jobs

import "strings"

// ShellJoin renders a command and its arguments as a POSIX shell would
// take them back: an argument with blanks, quotes or other characters
// special to the shell (or an empty one) is single-quoted. Logs and pages
// show commands this way, so that `dbt run --select "tag:a b"` does not
// read as four arguments.
func ShellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = ShellQuote(a)
	}
	return strings.Join(out, " ")
}

// ShellQuote quotes one argument for a POSIX shell when it needs it.
func ShellQuote(a string) string {
	if a != "" && !strings.ContainsAny(a, " \t\n\r'\"$`\\|&;<>()*?[]#~{}!") {
		return a
	}
	return "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
}
