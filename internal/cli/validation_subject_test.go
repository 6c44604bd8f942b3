package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJobValidationNamesYAMLPaths applies a jobs file with several
// problems: the error says it is about a job (not a connection) and names
// each problem by its path in the file, never as a flag that does not
// exist; exec names its own arguments.
func TestJobValidationNamesYAMLPaths(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	bad := filepath.Join(t.TempDir(), "jobs.yaml")
	yaml := "jobs:\n  - name: nightly\n    connection: nope\n    timeout: 1ms\n    steps:\n      - sql: select 1\n        workdir: relative\n"
	if err := os.WriteFile(bad, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	r := h.fail(2, "job", "apply", "-f", bad)
	contains(t, "job apply", r.stderr, "invalid job (3 problems):", "jobs[0](nightly).timeout:",
		"jobs[0](nightly).steps[0].workdir:")
	if strings.Contains(r.stderr, "invalid connection") || strings.Contains(r.stderr, "--") {
		t.Fatalf("job problems named as connection flags:\n%s", r.stderr)
	}
	// A valid file whose connection does not exist: found by the use case.
	if err := os.WriteFile(bad, []byte("jobs:\n  - name: nightly\n    connection: nope\n    steps:\n      - sql: select 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = h.fail(2, "job", "apply", "-f", bad)
	contains(t, "job apply", r.stderr, "invalid job: jobs[0](nightly).connection: no connection named \"nope\"")
	if strings.Contains(r.stderr, "invalid connection") || strings.Contains(r.stderr, "--") {
		t.Fatalf("job problems named as connection flags:\n%s", r.stderr)
	}

	r = h.fail(2, "exec", "wh", "--workdir", "relative", "--target", "no-dashes", "--", "psql")
	contains(t, "exec", r.stderr, "invalid exec arguments (2 problems):", "--workdir:", "--target:")
	if strings.Contains(r.stderr, "steps[") {
		t.Fatalf("exec problems named by job paths:\n%s", r.stderr)
	}
}
