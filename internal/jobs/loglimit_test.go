package jobs

import (
	"strings"
	"testing"
)

func TestLogLimit(t *testing.T) {
	g := NewLogLimit(10)
	out := func(text string) LogLine { return LogLine{Stream: "stdout", Step: 0, Text: text} }
	var kept []LogLine
	for _, l := range []LogLine{
		out("abcd"), {Stream: "system", Step: -1, Text: "sys"}, out("é€"), // 4 + 3 + 5 = 12 > 10: "é" fits, "€" does not
		out("dropped"), {Stream: "system", Step: -1, Text: "step 2"}, out("x"),
	} {
		kept = append(kept, g.Admit(l)...)
	}
	var texts []string
	for _, l := range kept {
		texts = append(texts, l.Text)
	}
	if len(kept) != 5 || texts[0] != "abcd" || texts[1] != "sys" || texts[2] != "é" ||
		!strings.HasPrefix(texts[3], MarkerPrefix) || kept[3].Stream != "system" || texts[4] != "step 2" {
		t.Fatalf("kept %q", texts)
	}
	if !g.Truncated() || g.Dropped() != int64(len("€")+len("dropped")+len("x")) {
		t.Fatalf("truncated %v, dropped %d", g.Truncated(), g.Dropped())
	}
	if want := MarkerPrefix + "10 bytes (--run-log-limit): 11 further bytes of output (11 B) not kept"; g.Marker() != want {
		t.Fatalf("marker %q, want %q", g.Marker(), want)
	}

	// Output that ends exactly at the limit is not truncated.
	g = NewLogLimit(4)
	if got := g.Admit(out("abcd")); len(got) != 1 || g.Truncated() {
		t.Fatalf("exactly at the limit: %v, truncated %v", got, g.Truncated())
	}
	// A line past a full log adds only the marker.
	if got := g.Admit(out("e")); len(got) != 1 || !strings.HasPrefix(got[0].Text, MarkerPrefix) {
		t.Fatalf("past a full log: %+v", got)
	}
	if NewLogLimit(0).max != DefaultLogLimit {
		t.Fatal("a limit of 0 is not the default")
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{10 << 20: "10 MiB", 512 << 10: "512 KiB", 1 << 30: "1 GiB", 1000: "1000 bytes", 1536: "1536 bytes"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
