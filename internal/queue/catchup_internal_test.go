package queue

import (
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
)

// TestFiringInstant: the instant a firing is for, as River's enqueuer
// calls a periodic job up to 100 ms early or a little late: the instant
// ahead, or the one just passed; none for schedules of firings less than
// a minute apart (a late firing could be taken for the next), or when the
// last firing is older than the catch-up window. An @every interval counts
// from the job's save, two hours before due here.
func TestFiringInstant(t *testing.T) {
	t.Parallel()
	due := time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		spec string
		now  time.Time
		want time.Time // zero: none
	}{
		{"CRON_TZ=UTC 0 3 * * *", due.Add(-100 * time.Millisecond), due},
		{"CRON_TZ=UTC 0 3 * * *", due, due},
		{"CRON_TZ=UTC 0 3 * * *", due.Add(30 * time.Second), due},
		{"CRON_TZ=UTC 0 3 * * *", due.Add(catchUpWindow + time.Second), time.Time{}},
		{"CRON_TZ=UTC * * * * *", due.Add(20 * time.Second), due},
		{"*/10 * * * * *", due, time.Time{}},
		{"@every 1h", due.Add(-50 * time.Millisecond), due},
		{"@every 1h", due.Add(30 * time.Second), due},
		{"@every 30s", due, time.Time{}},
	} {
		sched, err := jobs.ScheduleFor(tc.spec, due.Add(-2*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		got, ok := firingInstant(sched, tc.now)
		if ok != !tc.want.IsZero() || !got.Equal(tc.want) {
			t.Errorf("%q at %s: %v %v, want %v", tc.spec, tc.now.Format(time.StampMilli), got, ok, tc.want)
		}
	}
}
