package cli

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pgrelay/pgrelay/internal/diagnose"
)

// TestPrintStepAligned: whatever a step took, its detail starts in the
// same column, and times read as in the web UI ("412 ms", "12 s").
func TestPrintStepAligned(t *testing.T) {
	steps := []diagnose.Step{
		{ID: diagnose.StepResolve, Status: diagnose.StatusOK, DurationMS: 0.004, Detail: "D"},
		{ID: diagnose.StepBastionTCP, Status: diagnose.StatusOK, DurationMS: 3.14159, Detail: "D"},
		{ID: diagnose.StepSSHHandshake, Status: diagnose.StatusOK, DurationMS: 412, Detail: "D"},
		{ID: diagnose.StepSSHAuth, Status: diagnose.StatusFailed, DurationMS: 12_345, Detail: "D"},
		{ID: diagnose.StepPostgresAuth, Status: diagnose.StatusFailed, DurationMS: 192_000, Detail: "D"},
		{ID: diagnose.StepQuery, Status: diagnose.StatusSkipped, Detail: "D"},
	}
	var b bytes.Buffer
	for _, s := range steps {
		printStep(&b, s)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	col := -1
	for _, l := range lines {
		i := strings.LastIndex(l, " D")
		c := utf8.RuneCountInString(l[:i])
		if col == -1 {
			col = c
		}
		if c != col {
			t.Errorf("detail in column %d, not %d:\n%s", c, col, b.String())
			break
		}
	}
	for _, want := range []string{"< 0.01 ms", "3.14 ms", "412 ms", "12 s", "3 min 12 s"} {
		if !strings.Contains(b.String(), want+"  D") {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

// TestPrintStepEscapesControls: what a server says (an error, a version)
// is printed with its control characters written out.
func TestPrintStepEscapesControls(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	printStep(&b, diagnose.Step{ID: diagnose.StepQuery, Status: diagnose.StatusFailed,
		Error: "server says \x1b]52;c;eA==\x07 \u009b2J", Hint: "line\r\x1b[1Aover"})
	printStep(&b, diagnose.Step{ID: diagnose.StepDatabase, Status: diagnose.StatusOK, Detail: "version \x1b]0;title\x07"})
	out := b.String()
	for _, want := range []string{`error: server says \x1b]52;c;eA==\x07 \u009b2J`, `hint:  line\r\x1b[1Aover`, `version \x1b]0;title\x07`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.ContainsAny(out, "\x1b\x07\r\u009b") {
		t.Errorf("output holds control characters raw: %q", out)
	}
}
