package elapsed_test

import (
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/elapsed"
)

// cases are the formats every face shows; the web UI's script is checked
// against FormatMS in the browser tests (internal/web).
var cases = []struct {
	MS   float64
	Want string
}{
	{-1, "—"}, {0, "0 ms"}, {0.004, "< 0.01 ms"}, {0.005, "0.01 ms"}, {0.52, "0.52 ms"}, {0.5, "0.5 ms"},
	{0.125, "0.13 ms"}, {3, "3 ms"}, {3.14159, "3.14 ms"}, {9.994, "9.99 ms"}, {9.996, "10 ms"}, {10, "10 ms"},
	{412.4, "412 ms"}, {412.5, "413 ms"}, {999.4, "999 ms"}, {999.6, "1.0 s"}, {1234, "1.2 s"}, {1250, "1.3 s"}, {9949, "9.9 s"}, {9950, "10 s"}, {12_345, "12 s"}, {12_600, "13 s"},
	{59_499, "59 s"}, {59_999, "1 min 0 s"}, {192_000, "3 min 12 s"}, {3_599_000, "59 min 59 s"}, {3_599_999, "1 h 0 min"},
	{3_600_000, "1 h 0 min"}, {3_900_000, "1 h 5 min"},
}

func TestFormatMS(t *testing.T) {
	for _, c := range cases {
		if got := elapsed.FormatMS(c.MS); got != c.Want {
			t.Errorf("FormatMS(%v) = %q, want %q", c.MS, got, c.Want)
		}
	}
	if got := elapsed.Format(1234 * time.Millisecond); got != "1.2 s" {
		t.Errorf("Format(1.234s) = %q", got)
	}
}
