package web_test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/elapsed"
)

// testDurationsInBrowser checks that the script formats durations as the
// server does (package elapsed), so that a step's or a run's time reads
// the same whether the page was rendered or updated live.
func testDurationsInBrowser(t *testing.T, s *stack, browser context.Context) {
	t.Run("DurationsAsServer", func(t *testing.T) {
		b := newTab(t, browser, s.URL)
		b.open("/login")
		values := []float64{-1, 0, 0.001, 0.004, 0.005, 0.125, 0.5, 0.52, 3, 3.14159, 9.994, 9.995, 9.996, 10, 10.5,
			412.4, 412.5, 999.4, 999.5, 999.6, 1234, 1250, 9949, 9950, 9999, 12_345, 12_500, 59_499, 59_500, 59_999,
			60_000, 192_000, 3_599_000, 3_599_499, 3_599_500, 3_600_000, 3_900_000, 86_400_000}
		strs := make([]string, len(values))
		for i, v := range values {
			strs[i] = strconv.FormatFloat(v, 'g', -1, 64)
		}
		got := b.eval(`JSON.stringify([` + strings.Join(strs, ",") + `].map(window.pgrelay.fmtDuration))`)
		var js []string
		if err := json.Unmarshal([]byte(got), &js); err != nil || len(js) != len(values) {
			t.Fatalf("script's durations %q: %v", got, err)
		}
		for i, v := range values {
			if want := elapsed.FormatMS(v); js[i] != want {
				t.Errorf("%v ms: the script shows %q, the server %q", v, js[i], want)
			}
		}
	})
}
