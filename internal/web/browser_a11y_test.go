package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// Accessibility checks with axe-core (the npm package, installed by
// scripts/install-test-deps.sh into .cache/npm): its script is evaluated in
// the real Chromium page and axe.run() must find no violation, on every
// page of the UI, at a desktop's and at a phone's width.

// Environment of the accessibility checks.
const (
	// axeEnv is the path of axe.min.js, when it is not in .cache/npm.
	axeEnv = "PGRELAY_AXE_JS"
	// requireAxeEnv=1 (set by make test) fails the tests when axe-core is
	// missing instead of skipping them.
	requireAxeEnv = "PGRELAY_REQUIRE_AXE"
)

// viewports are the widths the pages are checked at: a laptop and a phone.
var viewports = []struct {
	name          string
	width, height int64
	scale         float64
}{
	{"desktop", 1280, 800, 1},
	{"phone", 390, 844, 2},
}

// axeSource returns the script of axe-core, or skips the test (fails it
// under make test) when it is not installed.
func axeSource(t *testing.T) string {
	t.Helper()
	path := os.Getenv(axeEnv)
	if path == "" {
		path = filepath.Join("..", "..", ".cache", "npm", "node_modules", "axe-core", "axe.min.js")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		msg := fmt.Sprintf("axe-core is not installed (%v): `make test-deps` (scripts/install-test-deps.sh) installs it "+
			"into .cache/npm; or set %s to the path of axe.min.js", err, axeEnv)
		if os.Getenv(requireAxeEnv) == "1" {
			t.Fatal(msg)
		}
		t.Skip("accessibility checks skipped: " + msg)
	}
	return string(b)
}

// axeViolation is one rule axe-core found broken, with the elements.
type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target  []any  `json:"target"`
		Summary string `json:"failureSummary"`
		HTML    string `json:"html"`
	} `json:"nodes"`
}

// axe runs axe-core on the page the tab shows, at each viewport, and fails
// the test for every violation. It leaves the tab at the desktop's size.
func (b *tab) axe(src, page string) {
	b.t.Helper()
	defer b.do("desktop viewport", chromedp.EmulateViewport(1280, 800))
	for _, vp := range viewports {
		b.do("viewport "+vp.name, chromedp.EmulateViewport(vp.width, vp.height, chromedp.EmulateScale(vp.scale)))
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		if loaded, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`typeof window.axe !== "undefined"`)); err != nil || !loaded {
			if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](src+"\n;\"loaded\"")); err != nil {
				cancel()
				b.t.Fatalf("%s: load axe-core: %.300v", page, err)
			}
		}
		res, err := chromedp.Run(ctx, chromedp.Evaluate[string](
			`axe.run(document, {resultTypes: ["violations"]}).then(r => JSON.stringify(r.violations))`,
			chromedp.EvalAwaitPromise))
		cancel()
		if err != nil {
			b.t.Fatalf("%s (%s): axe.run: %v", page, vp.name, err)
		}
		var vs []axeViolation
		if err := json.Unmarshal([]byte(res), &vs); err != nil {
			b.t.Fatalf("%s (%s): axe results %q: %v", page, vp.name, res, err)
		}
		for _, v := range vs {
			var nodes []string
			for _, n := range v.Nodes {
				nodes = append(nodes, fmt.Sprintf("    %v: %s\n      %s", n.Target, strings.ReplaceAll(n.Summary, "\n", "\n      "),
					truncateHTML(n.HTML)))
			}
			b.t.Errorf("%s at %s width: axe %s (%s): %s\n%s", page, vp.name, v.ID, v.Impact, v.Help, strings.Join(nodes, "\n"))
		}
	}
}

func truncateHTML(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// testAccessibilityInBrowser runs axe-core on every page of the UI, in the
// states a user meets them: empty lists, lists with a changed host key and
// an open test panel, forms with errors, a permissions report, jobs and
// runs. s holds what the other browser tests created.
func testAccessibilityInBrowser(t *testing.T, s *stack, browser context.Context, bastion *testenv.Bastion) {
	t.Run("Accessibility", func(t *testing.T) {
		src := axeSource(t)
		ctx := context.Background()

		// A new store: the sign-in page and the empty lists.
		empty := newStack(t)
		b := newTab(t, browser, empty.URL)
		b.open("/login")
		b.axe(src, "sign-in page")
		b.login("pgr_not-a-token")
		b.axe(src, "sign-in page with an error")
		b.login(empty.Tokens[auth.Admin].Token)
		for _, p := range []string{"/connections", "/jobs", "/runs", "/no/such/page"} {
			b.open(p)
			b.axe(src, p+" (empty)")
			if p == "/connections" || p == "/jobs" {
				b.centered(".card.empty > h2", p+" empty state")
			}
		}

		// The bastion's host key changes again: a connection waits for
		// approval.
		bastion.RotateHostKey(t)
		if _, err := s.App.Open(ctx, "analytics-eu"); err == nil {
			t.Fatal("a changed host key was accepted")
		}
		jobs, err := s.App.ListJobs(ctx)
		if err != nil || len(jobs) == 0 {
			t.Fatalf("jobs: %v, %v", jobs, err)
		}
		runs, err := s.App.ListRuns(ctx, store.RunFilter{})
		if err != nil || len(runs) == 0 {
			t.Fatalf("runs: %v, %v", runs, err)
		}
		job, run := jobs[0].Name, runs[0].ID

		b = newTab(t, browser, s.URL)
		b.open("/connections")
		b.login(s.Tokens[auth.Admin].Token)
		for _, p := range []string{
			"/connections", "/connections/analytics-eu", "/connections/keysetup?created=1", "/connections/lakehouse",
			"/connections/new", "/connections/analytics-eu/edit", "/connections/analytics-eu/delete",
			"/connections/analytics-eu/rotate-key", "/connections/reporting/grants",
			"/jobs", "/jobs/" + job, "/jobs/new", "/jobs/" + job + "/edit", "/jobs/" + job + "/delete",
			"/runs", "/runs/" + run, "/connections/nosuch",
		} {
			b.open(p)
			b.axe(src, p)
		}

		// Pages in the states forms and buttons lead to.
		b.open("/connections/new")
		b.submit("#save")
		b.axe(src, "new connection form with problems")
		b.open("/jobs/new")
		b.submit("#save")
		b.axe(src, "new job form with problems")
		b.submit("#mode-yaml")
		b.axe(src, "new job form, YAML")
		b.open("/connections")
		b.click(`form[data-test="finance"] button`)
		b.waitFor("the test to fail", `document.querySelector("#test-panel-finance.test-failed") !== null`, 15*time.Second)
		b.axe(src, "/connections with a failed test")
		b.open("/connections/reporting/grants")
		b.fill("#f-source_schemas", "raw\nstripe\nnosuch")
		b.submit("#check-permissions")
		b.axe(src, "permissions report")
	})
}

// centered fails the test unless the text of the element sel is centred
// in the element (within a pixel), at a desktop's and a phone's width.
func (b *tab) centered(sel, what string) {
	b.t.Helper()
	defer b.do("desktop viewport", chromedp.EmulateViewport(1280, 800))
	for _, vp := range viewports {
		b.do("viewport "+vp.name, chromedp.EmulateViewport(vp.width, vp.height, chromedp.EmulateScale(vp.scale)))
		off := b.eval(`(() => { const el = document.querySelector(` + strconv.Quote(sel) + `); const r = document.createRange();
			r.selectNodeContents(el); const t = r.getBoundingClientRect(), e = el.getBoundingClientRect();
			return String(Math.round(Math.abs((t.left + t.right) / 2 - (e.left + e.right) / 2))) })()`)
		if off != "0" && off != "1" {
			b.t.Errorf("%s: the heading %s is %s px off centre at %s width", what, sel, off, vp.name)
		}
	}
}
