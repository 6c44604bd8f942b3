package web_test

import (
	"context"
	"html"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/web"
)

func TestZoneLabel(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := time.LoadLocation("America/Sao_Paulo")
	if err != nil {
		t.Fatal(err)
	}
	winter := time.Date(2026, 12, 8, 12, 0, 0, 0, time.UTC)
	summer := time.Date(2026, 7, 8, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		loc  *time.Location
		now  time.Time
		want string
	}{
		{time.UTC, winter, "UTC"},
		{time.FixedZone("Local", 0), winter, "UTC"},
		{berlin, winter, "Europe/Berlin (CET, UTC+01:00 now)"},
		{berlin, summer, "Europe/Berlin (CEST, UTC+02:00 now)"},
		{kolkata, winter, "Asia/Kolkata (IST, UTC+05:30 now)"},
		{sp, winter, "America/Sao_Paulo (UTC-03:00 now)"},
		{time.FixedZone("Local", -5*3600), winter, "UTC-05:00"},
	} {
		if got := web.ZoneLabel(c.loc, c.now); got != c.want {
			t.Errorf("%v at %v: %q, want %q", c.loc, c.now, got, c.want)
		}
	}
	// The zone of /etc/localtime when TZ is unset, which Go names "Local".
	data, err := os.ReadFile("/usr/share/zoneinfo/Europe/Berlin")
	if err != nil {
		t.Logf("no zoneinfo file: %v", err)
		return
	}
	local, err := time.LoadLocationFromTZData("Local", data)
	if err != nil {
		t.Fatal(err)
	}
	if got := web.ZoneLabel(local, winter); got != "CET (UTC+01:00 now)" {
		t.Errorf("Local Berlin: %q", got)
	}
}

// TestJobScheduleZone checks that the job form and a job's page name the
// zone a schedule's times are in: "0 3 * * *" is 03:00 in the server's
// zone, and the page shows the next run in UTC beside it.
func TestJobScheduleZone(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	addConnection(t, s, "wh")
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	zone := web.ZoneLabel(time.Local, time.Now())

	r := c.get("/jobs/new")
	if r.Status != http.StatusOK {
		t.Fatalf("/jobs/new: %d", r.Status)
	}
	// The page's text, as html/template escapes "+" too.
	text := func(body string) string { return html.UnescapeString(body) }
	contains(t, "new job form", text(r.Body), "the server's time zone, "+zone+", unless")

	for _, j := range []jobs.Job{
		{Name: "nightly", Connection: "wh", Schedule: "0 3 * * *", Steps: []jobs.Step{{SQL: "select 1"}}},
		{Name: "berlin", Connection: "wh", Schedule: "CRON_TZ=Europe/Berlin 0 3 * * *", Steps: []jobs.Step{{SQL: "select 1"}}},
		{Name: "often", Connection: "wh", Schedule: "@every 10m", Steps: []jobs.Step{{SQL: "select 1"}}},
	} {
		if _, err := s.App.CreateJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	contains(t, "job page", text(c.get("/jobs/nightly").Body),
		`id="schedule-zone"`, "in the server's time zone, "+zone+"</span>")
	// A schedule that names its zone, or has none, needs no other.
	for _, name := range []string{"berlin", "often"} {
		excludes(t, name+" job page", c.get("/jobs/"+name).Body, `id="schedule-zone"`)
	}
}
