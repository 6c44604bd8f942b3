package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestZoneDataEmbedded: the binary carries the time zone database, so
// that TZ and CRON_TZ= schedules work where the system has none (the
// container image is FROM scratch): without it a zone fell back to UTC and
// a CRON_TZ= schedule was refused as invalid.
func TestZoneDataEmbedded(t *testing.T) {
	t.Parallel()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	if !slices.Contains(strings.Fields(string(out)), "time/tzdata") {
		t.Fatal("cmd/pgrelay does not link time/tzdata")
	}
}
