package api_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// TestListRunsPages pages through GET /runs with before and next_before:
// with most runs queued at the same instant, each run comes exactly once,
// newest first (queued_at, then id, descending); next_before is absent on
// the last page, also when it ends exactly at a page's end; a before that
// names no run is a 400 naming the field.
func TestListRunsPages(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	viewer := srv.Token(t, "pager", auth.Viewer)
	job := jobs.Job{Name: "tick", Connection: "db", Steps: []jobs.Step{{SQL: "select 1"}}}
	other := jobs.Job{Name: "tock", Connection: "db", Steps: []jobs.Step{{SQL: "select 1"}}}
	at := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	var want, ticks []string
	add := func(j jobs.Job, queued time.Time) {
		t.Helper()
		r := jobs.NewRun(j, jobs.Manual, queued)
		if err := srv.Store.CreateRun(bg, r); err != nil {
			t.Fatal(err)
		}
		want = append(want, r.ID)
		if j.Name == job.Name {
			ticks = append(ticks, r.ID)
		}
	}
	// Newest first: one run a minute later, 18 at the same instant (IDs
	// descending), two a minute earlier: 21 runs, three pages of 7.
	add(job, at.Add(time.Minute))
	var tied []string
	for i := range 18 {
		j := job
		if i%3 == 0 {
			j = other
		}
		r := jobs.NewRun(j, jobs.Manual, at)
		if err := srv.Store.CreateRun(bg, r); err != nil {
			t.Fatal(err)
		}
		tied = append(tied, r.ID)
	}
	slices.Sort(tied)
	slices.Reverse(tied)
	for _, id := range tied {
		want = append(want, id)
		if r, _ := srv.Store.GetRun(bg, id); r.JobName == job.Name {
			ticks = append(ticks, id)
		}
	}
	add(job, at.Add(-time.Minute))
	add(other, at.Add(-time.Minute-time.Second))

	list := func(query url.Values) api.RunList {
		t.Helper()
		r := do(t, http.MethodGet, srv.URL+"/api/v1/runs?"+query.Encode(), viewer.Token, "", "")
		var l api.RunList
		if r.status != http.StatusOK || json.Unmarshal([]byte(r.body), &l) != nil {
			t.Fatalf("GET /runs?%s: %d %s", query.Encode(), r.status, r.body)
		}
		if strings.Contains(r.body, `"next_before"`) != (l.NextBefore != "") {
			t.Errorf("next_before is present but empty: %s", r.body)
		}
		return l
	}
	// pages follows next_before from the first page of query and returns
	// the IDs listed and the size of each page.
	pages := func(query url.Values) (ids []string, sizes []int) {
		t.Helper()
		for len(sizes) < 50 {
			l := list(query)
			sizes = append(sizes, len(l.Runs))
			for _, r := range l.Runs {
				ids = append(ids, r.ID)
			}
			if l.NextBefore == "" {
				return ids, sizes
			}
			if l.NextBefore != l.Runs[len(l.Runs)-1].ID {
				t.Fatalf("next_before %s is not the page's last run %s", l.NextBefore, l.Runs[len(l.Runs)-1].ID)
			}
			query.Set("before", l.NextBefore)
		}
		t.Fatalf("paging %v did not end", query)
		return nil, nil
	}
	for _, size := range []string{"1", "2", "7", "20", "21", "1000"} {
		ids, sizes := pages(url.Values{"limit": {size}})
		if !slices.Equal(ids, want) {
			t.Errorf("pages of %s: %v\nwant each run once, in order: %v", size, ids, want)
		}
		if size == "7" && !slices.Equal(sizes, []int{7, 7, 7}) {
			t.Errorf("pages of 7: sizes %v, want 7, 7, 7 (no empty page after the last)", sizes)
		}
	}
	ids, _ := pages(url.Values{"limit": {"4"}, "job": {job.Name}, "status": {"queued"}})
	if !slices.Equal(ids, ticks) {
		t.Errorf("pages of job %s: %v\nwant %v", job.Name, ids, ticks)
	}
	// before may name a run the filter leaves out.
	if l := list(url.Values{"job": {job.Name}, "before": {want[len(want)-1]}}); len(l.Runs) != 0 || l.NextBefore != "" {
		t.Errorf("runs before the oldest: %+v", l)
	}

	// The remote client pages as well.
	c := srv.Client(t, viewer.Token)
	var paged []string
	f := store.RunFilter{Limit: 8}
	for range 10 {
		p, err := c.ListRunsPage(bg, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Runs {
			paged = append(paged, r.ID)
		}
		if f.Before = p.NextBefore; f.Before == "" {
			break
		}
	}
	if !slices.Equal(paged, want) {
		t.Errorf("client pages: %v\nwant %v", paged, want)
	}

	for _, q := range []string{"before=nosuchrun", "before=", "job=tick&limit=5&before=" + url.QueryEscape("x y")} {
		r := do(t, http.MethodGet, srv.URL+"/api/v1/runs?"+q, viewer.Token, "", "")
		eb := r.errorBody(t)
		if r.status != http.StatusBadRequest || eb.Code != api.CodeValidationFailed || !strings.Contains(eb.Fields.Map()["before"], "ID of") {
			t.Errorf("GET /runs?%s: %d %s, want 400 naming the field before", q, r.status, r.body)
		}
	}
	var ve *app.ValidationError
	if _, err := c.ListRunsPage(bg, store.RunFilter{Before: "nosuchrun"}); !errors.As(err, &ve) || ve.Fields()["before"] == "" {
		t.Errorf("client with a before naming no run: %v", err)
	}
}
