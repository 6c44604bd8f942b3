package cli_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// TestRunListBefore pages through `run list` with --before, locally and
// against a server: the text output ends with the command of the next
// page while there are older runs, following it lists each run exactly
// once in order (runs queued at the same instant by ID, descending), and a
// --before naming no run is a usage error naming the flag.
func TestRunListBefore(t *testing.T) {
	t.Parallel()
	t.Run("Local", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.ok("run", "list") // makes the data dir and its store
		st, err := sqlite.Open(context.Background(), filepath.Join(h.dataDir, sqlite.FileName))
		if err != nil {
			t.Fatal(err)
		}
		want := addPagedRuns(t, st)
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		checkRunListBefore(t, h, want)
	})
	t.Run("Remote", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{})
		h := newHarness(t)
		h.env["PGRELAY_SERVER"] = srv.URL
		h.env["PGRELAY_TOKEN"] = srv.AdminToken
		checkRunListBefore(t, h, addPagedRuns(t, srv.Store))
	})
}

// addPagedRuns saves 8 runs of job "pages", 6 of them queued at the same
// instant, and returns their IDs newest first.
func addPagedRuns(t *testing.T, st store.Store) []string {
	t.Helper()
	job := jobs.Job{Name: "pages", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}}
	at := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	var tied []string
	add := func(queued time.Time) string {
		r := jobs.NewRun(job, jobs.Manual, queued)
		if err := st.CreateRun(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		return r.ID
	}
	newest := add(at.Add(time.Minute))
	for range 6 {
		tied = append(tied, add(at))
	}
	oldest := add(at.Add(-time.Minute))
	slices.Sort(tied)
	slices.Reverse(tied)
	return append(append([]string{newest}, tied...), oldest)
}

func checkRunListBefore(t *testing.T, h *harness, want []string) {
	t.Helper()
	// Pages of 3 from the table's hints: 3, 3, 2.
	args := []string{"run", "list", "--job", "pages", "--limit", "3"}
	var got []string
	var sizes []int
	for len(sizes) < 10 {
		out := h.ok(args...).stdout
		n := 0
		next := ""
		for _, line := range strings.Split(out, "\n")[1:] {
			if hint, ok := strings.CutPrefix(line, "Older runs: "); ok {
				next = hint
			} else if f := strings.Fields(line); len(f) > 0 {
				got = append(got, f[0])
				n++
			}
		}
		sizes = append(sizes, n)
		if next == "" {
			break
		}
		last := got[len(got)-1]
		if want := "pgrelay run list --job pages --limit 3 --before " + last; next != want {
			t.Fatalf("next page hint %q, want %q", next, want)
		}
		args = strings.Fields(next)[1:]
	}
	if !slices.Equal(got, want) || !slices.Equal(sizes, []int{3, 3, 2}) {
		t.Fatalf("pages %v of %v, want each run once in order (pages of 3, 3, 2): %v", sizes, got, want)
	}

	// JSON: the runs after --before, as an array.
	var runs []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(h.ok("run", "list", "--before", want[2], "--limit", "4", "-o", "json").stdout), &runs); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.ID)
	}
	if !slices.Equal(ids, want[3:7]) {
		t.Errorf("json after %s: %v, want %v", want[2], ids, want[3:7])
	}
	// The last page has no hint, also when it is full.
	if out := h.ok("run", "list", "--before", want[4], "--limit", "3").stdout; strings.Contains(out, "Older runs") ||
		!strings.Contains(out, want[7]) {
		t.Errorf("last, full page:\n%s", out)
	}

	r := h.fail(2, "run", "list", "--before", "nosuchrun")
	contains(t, "--before naming no run", r.stderr, `--before "nosuchrun": no run has this ID`)
	r = h.fail(2, "run", "list", "--before", "")
	contains(t, "empty --before", r.stderr, "--before: give the ID of a run")
}
