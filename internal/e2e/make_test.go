package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeTargets checks the Makefile's commands as a new user runs them:
// `make install` copies the binary to $GOBIN, else to $(PREFIX)/bin
// (/usr/local/bin), saying what it builds and where it goes; `make run
// ARGS=...` passes flags to serve.
func TestMakeTargets(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	makeIn := func(env []string, args ...string) string {
		t.Helper()
		cmd := exec.Command("make", append([]string{"-C", root, "--no-print-directory"}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// Dry runs (-n): the commands, without building again.
	out := makeIn([]string{"GOBIN="}, "-n", "install", "PREFIX=/opt/pgrelay")
	for _, want := range []string{`echo "building bin/pgrelay from ./cmd/pgrelay`, "go build -trimpath -o bin/pgrelay ./cmd/pgrelay",
		`echo "installing bin/pgrelay as /opt/pgrelay/bin/pgrelay"`, `install -m 0755 bin/pgrelay "/opt/pgrelay/bin/pgrelay"`} {
		if !strings.Contains(out, want) {
			t.Errorf("make -n install PREFIX=/opt/pgrelay:\n%s\nwant %q", out, want)
		}
	}
	if out := makeIn([]string{"GOBIN="}, "-n", "install"); !strings.Contains(out, `install -m 0755 bin/pgrelay "/usr/local/bin/pgrelay"`) {
		t.Errorf("make -n install without GOBIN:\n%s", out)
	}
	if out := makeIn([]string{"GOBIN=/srv/gobin"}, "-n", "install"); !strings.Contains(out, `install -m 0755 bin/pgrelay "/srv/gobin/pgrelay"`) {
		t.Errorf("make -n install with GOBIN=/srv/gobin:\n%s", out)
	}
	if out := makeIn(nil, "-n", "run", "ARGS=--listen 127.0.0.1:9090"); !strings.Contains(out, "serve --listen 127.0.0.1:9090") {
		t.Fatalf("make -n run ARGS=...:\n%s", out)
	}
}
