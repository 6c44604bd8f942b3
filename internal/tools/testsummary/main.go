// Command testsummary reads `go test -json` events on standard input,
// prints what plain `go test` would (package results, and the output of
// failing tests), then each skipped test with the reason it gave, and
// ends with a line "N passed, M failed, K skipped" counting tests
// (subtests included). It exits 1 when anything failed or when no test
// ran.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	passed, failed, skipped := 0, 0, 0
	pkgFailed := false
	var skips []string // "package TestName: reason"
	// Output per test, printed only when the test (or its package) fails.
	outputs := map[string][]string{}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			// Build errors and other non-JSON lines pass through.
			fmt.Println(string(line))
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "build-output":
			fmt.Print(e.Output)
		case "build-fail":
			pkgFailed = true
		case "output":
			outputs[key] = append(outputs[key], e.Output)
		case "pass", "fail", "skip":
			if e.Test != "" {
				switch e.Action {
				case "pass":
					passed++
				case "fail":
					failed++
					fmt.Print(strings.Join(outputs[key], ""))
				case "skip":
					skipped++
					skips = append(skips, e.Package+" "+e.Test+": "+skipReason(outputs[key]))
				}
				delete(outputs, key)
				continue
			}
			// Package result: print its summary line(s).
			for _, o := range outputs[key] {
				if strings.HasPrefix(o, "ok ") || strings.HasPrefix(o, "FAIL") || strings.HasPrefix(o, "?") ||
					strings.Contains(o, "[no test files]") || e.Action == "fail" {
					fmt.Print(o)
				}
			}
			if e.Action == "fail" {
				pkgFailed = true
			}
			delete(outputs, key)
		}
	}
	for _, s := range skips {
		fmt.Println("skipped:", s)
	}
	fmt.Printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || pkgFailed || passed == 0 {
		os.Exit(1)
	}
}

// skipReason is what a skipped test logged (t.Skip's message), without
// the "=== RUN" and "--- SKIP" lines; "no reason given" when it logged
// nothing.
func skipReason(output []string) string {
	var lines []string
	for _, o := range output {
		o = strings.TrimSpace(o)
		if o == "" || strings.HasPrefix(o, "=== ") || strings.HasPrefix(o, "--- SKIP") {
			continue
		}
		lines = append(lines, o)
	}
	if len(lines) == 0 {
		return "no reason given"
	}
	return strings.Join(lines, " ")
}
