package jobs

import (
	"strings"
	"testing"
)

func TestLogLimit(t *testing.T) {
	g := NewLogLimit(12)
	out := func(text string) LogLine { return LogLine{Stream: "stdout", Step: 0, Text: text} }
	var kept []LogLine
	for _, l := range []LogLine{
		// Each line counts its line break: 5 + 4 + 6 = 15 > 12: "é" fits with its break, "€" does not.
		out("abcd"), {Stream: "system", Step: -1, Text: "sys"}, out("é€"),
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
	if !g.Truncated() || g.Dropped() != int64(len("€")+len("dropped\n")+len("x\n")) {
		t.Fatalf("truncated %v, dropped %d", g.Truncated(), g.Dropped())
	}
	if want := MarkerPrefix + "12 bytes (--run-log-limit): 13 further bytes of output (13 B) not kept"; g.Marker() != want {
		t.Fatalf("marker %q, want %q", g.Marker(), want)
	}

	// Output that ends exactly at the limit, line break included, is not
	// truncated.
	g = NewLogLimit(5)
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

// TestLogLimitCountsLineBreaks: a program printing nothing but line breaks
// reaches the limit too: each line counts its line break, so a log keeps at
// most as many lines as its limit has bytes (empty lines counted nothing,
// and a flood of them filled the store and the memory of serve without
// ever reaching the limit). A piece of a line too long to log at once
// counts its text only.
func TestLogLimitCountsLineBreaks(t *testing.T) {
	const limit, flood = 1 << 10, 1 << 20
	g := NewLogLimit(limit)
	kept := 0
	for range flood {
		kept += len(g.Admit(LogLine{Stream: StreamStdout, Text: ""}))
	}
	if kept > limit+1 || !g.Truncated() {
		t.Fatalf("%d empty lines under a %d-byte limit kept %d lines (truncated %v)", flood, limit, kept, g.Truncated())
	}
	if want := int64(flood - (kept - 1)); g.Dropped() != want {
		t.Fatalf("dropped %d bytes, want %d (one for each line break not kept)", g.Dropped(), want)
	}

	g = NewLogLimit(limit)
	piece := LogLine{Stream: StreamStdout, Text: strings.Repeat("x", limit/2), piece: true}
	for i := range 2 {
		if got := g.Admit(piece); len(got) != 1 || g.Truncated() {
			t.Fatalf("piece %d of a long line: %+v, truncated %v", i, got, g.Truncated())
		}
	}
	if got := g.Admit(LogLine{Stream: StreamStdout, Text: ""}); len(got) != 1 || got[0].Stream != StreamSystem || g.Dropped() != 1 {
		t.Fatalf("the line break after a full log: %+v, dropped %d", got, g.Dropped())
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{10 << 20: "10 MiB", 512 << 10: "512 KiB", 1 << 30: "1 GiB", 1000: "1000 bytes", 1536: "1536 bytes"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
