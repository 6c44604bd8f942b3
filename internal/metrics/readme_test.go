package metrics_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEListsEveryMetric: the README's metrics table names every
// metric this package defines (found in its sources: a Name or NewDesc),
// so that a new metric cannot be left undocumented.
func TestREADMEListsEveryMetric(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "| `pgrelay_") {
			table.WriteString(line + "\n")
		}
	}
	sources, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`(?:Name:\s*|NewDesc\()"(pgrelay_[a-z_]+)"`)
	found := 0
	for _, src := range sources {
		if strings.HasSuffix(src, "_test.go") {
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range name.FindAllStringSubmatch(string(b), -1) {
			found++
			if !strings.Contains(table.String(), "`"+m[1]+"`") && !strings.Contains(table.String(), "`"+m[1]+"{") {
				t.Errorf("%s (%s) is not in the README's metrics table", m[1], src)
			}
		}
	}
	if found < 15 {
		t.Fatalf("found only %d metric names in the sources: the pattern no longer matches them", found)
	}
}
