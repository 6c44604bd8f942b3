package cli

import (
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestDocumentedCommandLinesParse: every `pgrelay ...` command line of the
// README's code blocks and of the commands' help examples names commands
// and flags that exist, with values of their kind and the arguments the
// command takes.
func TestDocumentedCommandLinesParse(t *testing.T) {
	t.Parallel()
	r := &runner{env: Env{Getenv: func(string) string { return "" }}}
	root := r.rootCommand()

	type example struct{ where, line string }
	var lines []example
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	inBlock := false
	for _, l := range joinContinued(string(readme)) {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inBlock = !inBlock
			continue
		}
		if inBlock {
			lines = append(lines, example{"README.md", l})
		}
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, l := range joinContinued(c.Example) {
			lines = append(lines, example{c.CommandPath() + " --help", l})
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)

	// The check itself catches what it is for.
	for _, bad := range [][]string{{"connection", "lsit"}, {"conection", "list"}, {"connection", "create", "x", "--bogus"},
		{"query", "wh"}, {"connection", "create", "x", "--port", "x"}} {
		if parseOnly(r.rootCommand(), bad) == nil {
			t.Fatalf("pgrelay %s parses", strings.Join(bad, " "))
		}
	}
	checked := 0
	for _, ex := range lines {
		for _, args := range pgrelayInvocations(ex.line) {
			checked++
			if err := parseOnly(root, args); err != nil {
				t.Errorf("%s: pgrelay %s: %v", ex.where, strings.Join(args, " "), err)
			}
		}
	}
	t.Logf("%d command lines checked", checked)
	if checked < 40 {
		t.Fatalf("only %d command lines found", checked)
	}
}

// joinContinued splits text into lines, joining those continued with a
// trailing backslash.
func joinContinued(text string) []string {
	var out []string
	cur := ""
	for _, l := range strings.Split(text, "\n") {
		if strings.HasSuffix(strings.TrimRight(l, " "), "\\") {
			cur += strings.TrimSuffix(strings.TrimRight(l, " "), "\\") + " "
			continue
		}
		out = append(out, cur+l)
		cur = ""
	}
	return out
}

// pgrelayInvocations returns the arguments of each pgrelay command on a
// shell line: comments, environment assignments, pipes, redirections and
// `;`-separated commands are taken apart as a shell would (roughly).
func pgrelayInvocations(line string) [][]string {
	words := shellWords(line)
	var out [][]string
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w.op || (w.text != "pgrelay") {
			continue
		}
		// pgrelay must start a command: line start, after an operator,
		// after env assignments or sudo.
		start := true
		for j := i - 1; j >= 0; j-- {
			p := words[j]
			if p.op {
				break
			}
			if strings.Contains(p.text, "=") && !strings.HasPrefix(p.text, "-") || p.text == "sudo" {
				continue
			}
			start = false
			break
		}
		if !start {
			continue
		}
		var args []string
		for j := i + 1; j < len(words) && !words[j].op; j++ {
			if words[j].text == "..." {
				continue // "the other flags"
			}
			args = append(args, words[j].text)
		}
		out = append(out, args)
	}
	return out
}

type shellWord struct {
	text string
	op   bool // |, ;, >, >>, <, &&, ||
}

func shellWords(line string) []shellWord {
	var words []shellWord
	var cur strings.Builder
	inWord := false
	flush := func() {
		if inWord {
			words = append(words, shellWord{text: cur.String()})
			cur.Reset()
			inWord = false
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '#' && !inWord:
			flush()
			return words
		case c == ' ' || c == '\t':
			flush()
		case c == '\'':
			inWord = true
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				cur.WriteString(line[i+1:])
				i = len(line)
				continue
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			inWord = true
			j := strings.IndexByte(line[i+1:], '"')
			if j < 0 {
				cur.WriteString(line[i+1:])
				i = len(line)
				continue
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
		case c == '$' && i+1 < len(line) && line[i+1] == '(':
			// $(...) stays one word.
			inWord = true
			j := strings.IndexByte(line[i:], ')')
			if j < 0 {
				j = len(line) - i - 1
			}
			cur.WriteString(line[i : i+j+1])
			i += j
		case c == '<' && i+1 < len(line) && line[i+1] >= 'a' && line[i+1] <= 'z' && strings.IndexByte(line[i:], '>') > 0:
			// A placeholder, <client-id>.
			inWord = true
			j := strings.IndexByte(line[i:], '>')
			cur.WriteString(line[i : i+j+1])
			i += j
		case c == '|' || c == ';' || c == '>' || c == '<' || c == '&':
			flush()
			// Operators and what they redirect to end the command.
			words = append(words, shellWord{text: string(c), op: true})
		default:
			inWord = true
			cur.WriteByte(c)
		}
	}
	flush()
	return words
}

// parseOnly does what cobra does with args up to running the command:
// find it, parse its flags, check its arguments (a command group's
// argument must name one of its commands).
func parseOnly(root *cobra.Command, args []string) error {
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return flagError(err)
	}
	a := cmd.Flags().Args()
	if cmd.HasSubCommands() && len(a) > 0 {
		return unknownCommand(cmd, a[0])
	}
	return cmd.ValidateArgs(a)
}
