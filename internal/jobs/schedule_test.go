package jobs_test

import (
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin wherever the test runs

	"github.com/pgrelay/pgrelay/internal/jobs"
)

// firings walks a schedule as River's periodic enqueuer does (each next
// firing computed from the one before, starting from now) and returns
// the firings in [from, to).
func firings(t *testing.T, spec string, from, to time.Time) []time.Time {
	t.Helper()
	s, err := jobs.ParseSchedule(spec)
	if err != nil {
		t.Fatal(err)
	}
	var out []time.Time
	for n := s.Next(from.Add(-time.Nanosecond)); !n.IsZero() && n.Before(to); n = s.Next(n) {
		out = append(out, n)
		if len(out) > 1000 {
			t.Fatalf("%s: runaway schedule", spec)
		}
	}
	return out
}

// TestScheduleAcrossDSTChanges: a schedule at a fixed hour runs once a
// day on the days the clocks change, in the zone it is evaluated in (the
// process's, here Europe/Berlin, or the spec's CRON_TZ=). A daily 02:30
// used not to run at all on the day the clocks go forward (02:00 becomes
// 03:00) and to run twice on the day they go back (02:00-03:00 happens
// twice); schedules that fire every hour go by the hours that pass.
func TestScheduleAcrossDSTChanges(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	spring := time.Date(2026, 3, 29, 0, 0, 0, 0, berlin)  // 02:00 CET becomes 03:00 CEST
	autumn := time.Date(2026, 10, 25, 0, 0, 0, 0, berlin) // 03:00 CEST becomes 02:00 CET
	day := func(d time.Time) (time.Time, time.Time) { return d, d.AddDate(0, 0, 1) }
	at := func(d time.Time, h, m int) time.Time {
		return time.Date(d.Year(), d.Month(), d.Day(), h, m, 0, 0, berlin)
	}
	// utc names the instants of the repeated hour, whose wall times are
	// ambiguous: 02:30 CEST is 00:30 UTC, 02:30 CET 01:30 UTC.
	utc := func(h, m int) time.Time { return time.Date(2026, 10, 25, h, m, 0, 0, time.UTC) }
	cases := []struct {
		name, spec string
		day        time.Time
		want       []time.Time
	}{
		// In the hour that does not exist: once, when the clocks change.
		{"DailyInTheSkippedHour", "30 2 * * *", spring, []time.Time{at(spring, 3, 0)}},
		{"EveryTenMinutesOfTheSkippedHour", "*/10 2 * * *", spring, []time.Time{at(spring, 3, 0)}},
		{"SecondsFieldInTheSkippedHour", "15 30 2 * * *", spring, []time.Time{at(spring, 3, 0)}},
		{"CronTZInTheSkippedHour", "CRON_TZ=Europe/Berlin 30 2 * * *", spring, []time.Time{at(spring, 3, 0)}},
		{"DailyAfterTheSkippedHour", "0 3 * * *", spring, []time.Time{at(spring, 3, 0)}},
		{"DailyBeforeTheSkippedHour", "30 1 * * *", spring, []time.Time{at(spring, 1, 30)}},
		// In the hour that happens twice: once, the first time.
		{"DailyInTheRepeatedHour", "30 2 * * *", autumn, []time.Time{utc(0, 30)}},
		{"CronTZInTheRepeatedHour", "CRON_TZ=Europe/Berlin 30 2 * * *", autumn, []time.Time{utc(0, 30)}},
		{"EveryTwentyMinutesOfTheRepeatedHour", "*/20 2 * * *", autumn,
			[]time.Time{utc(0, 0), utc(0, 20), utc(0, 40)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			from, to := day(c.day)
			got := firings(t, c.spec, from, to)
			if len(got) != len(c.want) {
				t.Fatalf("%s on %s: fired %d times (%v), want %v", c.spec, c.day.Format(time.DateOnly), len(got), got, c.want)
			}
			for i := range got {
				if !got[i].Equal(c.want[i]) {
					t.Errorf("%s on %s: firing %d at %s, want %s", c.spec, c.day.Format(time.DateOnly), i, got[i], c.want[i])
				}
			}
		})
	}
	// Hourly schedules follow the hours that pass: 23 on the day the clocks
	// go forward, 25 on the day they go back.
	for d, want := range map[time.Time]int{spring: 23, autumn: 25} {
		from, to := day(d)
		if got := firings(t, "0 * * * *", from, to); len(got) != want {
			t.Errorf("hourly on %s: %d firings, want %d: %v", d.Format(time.DateOnly), len(got), want, got)
		}
	}
	// An ordinary day is untouched.
	plain := time.Date(2026, 6, 1, 0, 0, 0, 0, berlin)
	from, to := day(plain)
	if got := firings(t, "30 2 * * *", from, to); len(got) != 1 || !got[0].Equal(at(plain, 2, 30)) {
		t.Errorf("30 2 * * * on %s: %v", plain.Format(time.DateOnly), got)
	}
	// A process that starts in the second pass of the repeated hour, after
	// 02:30 ran in the first, waits for the next day.
	s, _ := jobs.ParseSchedule("30 2 * * *")
	second := utc(1, 10).In(berlin) // 02:10 CET
	if n := s.Next(second); !n.Equal(time.Date(2026, 10, 26, 1, 30, 0, 0, time.UTC)) {
		t.Errorf("next after %s: %s, want the next day's 02:30", second, n)
	}
}

// TestScheduleZonePrefixWithoutSchedule: a zone prefix with nothing after
// it ("TZ=", "CRON_TZ=Europe/Berlin") is refused with the form that is
// accepted; cron's parser panicked on it (found by FuzzParseSchedule), so
// saving such a job took down the request.
func TestScheduleZonePrefixWithoutSchedule(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"TZ=", "CRON_TZ=", "CRON_TZ=Europe/Berlin"} {
		if _, err := jobs.ParseSchedule(spec); err == nil || !strings.Contains(err.Error(), "CRON_TZ=Europe/Berlin 0 3 * * *") {
			t.Errorf("ParseSchedule(%q) = %v, want an error showing the accepted form", spec, err)
		}
	}
	if _, err := jobs.ParseSchedule("CRON_TZ=Europe/Berlin 0 3 * * *"); err != nil {
		t.Errorf("a zone and a schedule: %v", err)
	}
}

// TestEveryCountsFromSave: an @every interval fires at the job's save
// plus whole intervals, whenever its next firing is asked for (a process
// registering it at its start, a new leader), in whole seconds.
func TestEveryCountsFromSave(t *testing.T) {
	t.Parallel()
	saved := time.Date(2026, 3, 1, 10, 17, 42, 500_000_000, time.UTC)
	s, err := jobs.ScheduleFor("@every 1h", saved)
	if err != nil {
		t.Fatal(err)
	}
	anchor := saved.Truncate(time.Second)
	for _, c := range []struct{ from, want time.Time }{
		{saved.Add(-time.Minute), anchor.Add(time.Hour)}, // a clock a little behind the saver's
		{anchor, anchor.Add(time.Hour)},
		{anchor.Add(59 * time.Minute), anchor.Add(time.Hour)},
		{anchor.Add(time.Hour), anchor.Add(2 * time.Hour)},
		{anchor.Add(5*time.Hour + 3*time.Second), anchor.Add(6 * time.Hour)}, // a leader started then
	} {
		if got := s.Next(c.from); !got.Equal(c.want) {
			t.Errorf("Next(%v) = %v, want %v", c.from, got, c.want)
		}
	}
	// Cron specs are what ParseSchedule makes of them.
	c, err := jobs.ScheduleFor("0 3 * * *", saved)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Next(saved); got.Hour() != 3 || got.Minute() != 0 {
		t.Errorf("cron Next = %v", got)
	}
}
