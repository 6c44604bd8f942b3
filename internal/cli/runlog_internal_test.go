package cli

import (
	"testing"
	"time"
)

func TestParseRunLogFlags(t *testing.T) {
	for s, want := range map[string]int64{"10MiB": 10 << 20, "512KiB": 512 << 10, "1048576": 1 << 20, "1 GiB": 1 << 30, "2MB": 2e6, "1KiB": 1 << 10} {
		if got, err := parseRunLogLimit(s); err != nil || got != want {
			t.Errorf("parseRunLogLimit(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "x", "-1MiB", "1023", "2TiB", "10 parsecs"} {
		if _, err := parseRunLogLimit(s); err == nil {
			t.Errorf("parseRunLogLimit(%q) accepted", s)
		}
	}
	for s, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "0": 0, "720h": 720 * time.Hour, "36h30m": 36*time.Hour + 30*time.Minute, "1h": time.Hour} {
		if got, err := parseRunRetention(s); err != nil || got != want {
			t.Errorf("parseRunRetention(%q) = %s, %v; want %s", s, got, err, want)
		}
	}
	for _, s := range []string{"", "d", "1.5d", "-1d", "-2h", "59m", "0s1ns", "forever"} {
		if _, err := parseRunRetention(s); err == nil {
			t.Errorf("parseRunRetention(%q) accepted", s)
		}
	}
	var n int64 = 10 << 20
	var d = 90 * 24 * time.Hour
	if got := (sizeFlag{&n}).String(); got != "10MiB" {
		t.Errorf("size flag shows %q", got)
	}
	if got := (retentionFlag{d: &d}).String(); got != "90d" {
		t.Errorf("retention flag shows %q", got)
	}
}
