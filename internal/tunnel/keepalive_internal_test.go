package tunnel

import (
	"testing"
	"time"
)

func TestUntilAligned(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		now      time.Time
		interval time.Duration
		want     time.Duration
	}{
		{base, time.Second, time.Second}, // on a boundary: the next one
		{base.Add(250 * time.Millisecond), time.Second, 750 * time.Millisecond},
		{base.Add(999 * time.Millisecond), time.Second, time.Millisecond},
		{base.Add(10 * time.Second), 30 * time.Second, 15 * time.Second}, // 03:04:15 → 03:04:30
	} {
		if got := untilAligned(tc.now, tc.interval); got != tc.want {
			t.Errorf("untilAligned(%v, %v) = %v, want %v", tc.now.Format(time.StampMilli), tc.interval, got, tc.want)
		}
	}
	// Two tunnels opened at different moments are due at the same instant.
	a, b := base.Add(100*time.Millisecond), base.Add(700*time.Millisecond)
	if !a.Add(untilAligned(a, time.Second)).Equal(b.Add(untilAligned(b, time.Second))) {
		t.Error("keepalives of tunnels opened in the same interval are not due together")
	}
}
