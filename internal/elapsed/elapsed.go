// Package elapsed formats durations for people in one way across pgrelay's
// faces: the CLI, the web UI and its script (app.js, fmtDuration, which
// must match FormatMS).
//
//	0.004 ms  "< 0.01 ms"
//	0.52 ms   "0.52 ms"   (up to two decimals under 10 ms: "3 ms", "3.1 ms")
//	412 ms    "412 ms"
//	1234 ms   "1.2 s"     (one decimal under 10 s)
//	12 s      "12 s"
//	192 s     "3 min 12 s"
//	3900 s    "1 h 5 min"
package elapsed

import (
	"math"
	"strconv"
	"time"
)

// Format formats d; a negative d is "—".
func Format(d time.Duration) string {
	return FormatMS(float64(d) / float64(time.Millisecond))
}

// FormatMS formats a duration given in milliseconds; a negative one is
// "—". Each unit is rounded half up before it is chosen, with the same
// float64 arithmetic as the script, so both print the same text.
func FormatMS(ms float64) string {
	if ms < 0 || math.IsNaN(ms) {
		return "—"
	}
	if ms == 0 {
		return "0 ms"
	}
	if hundredths := math.Round(ms*100) / 100; hundredths < 10 {
		if hundredths == 0 {
			return "< 0.01 ms"
		}
		return strconv.FormatFloat(hundredths, 'f', -1, 64) + " ms"
	}
	if whole := math.Round(ms); whole < 1000 {
		return strconv.FormatFloat(whole, 'f', 0, 64) + " ms"
	}
	if tenths := math.Round(ms/100) / 10; tenths < 10 {
		return strconv.FormatFloat(tenths, 'f', 1, 64) + " s"
	}
	sec := int64(math.Round(ms / 1000))
	switch {
	case sec < 60:
		return strconv.FormatInt(sec, 10) + " s"
	case sec < 3600:
		return strconv.FormatInt(sec/60, 10) + " min " + strconv.FormatInt(sec%60, 10) + " s"
	}
	return strconv.FormatInt(sec/3600, 10) + " h " + strconv.FormatInt(sec%3600/60, 10) + " min"
}
