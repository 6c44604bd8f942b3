package client_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestSmallDependencyGraph keeps the client usable from other modules: it
// links the wire types and the standard library, not the server (package
// app, the API, the store, River, pgx, x/crypto).
func TestSmallDependencyGraph(t *testing.T) {
	t.Parallel()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	var deps []string
	for _, d := range strings.Fields(string(out)) {
		deps = append(deps, d)
		for _, bad := range []string{"/internal/", "riverqueue", "jackc/pgx", "golang.org/x/crypto", "modernc.org"} {
			if strings.Contains(d, bad) {
				t.Errorf("the client depends on %s", d)
			}
		}
	}
	if len(deps) > 10 {
		t.Errorf("the client depends on %d packages outside the standard library (at most 10): %s", len(deps), strings.Join(deps, " "))
	}
	t.Logf("non-standard dependencies: %s", strings.Join(deps, " "))
}
