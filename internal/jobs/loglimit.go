package jobs

import (
	"fmt"
	"unicode/utf8"

	"github.com/dustin/go-humanize"
)

// DefaultLogLimit is how many bytes of text a run's log keeps by default.
const DefaultLogLimit int64 = 10 << 20

// MarkerPrefix starts the line that marks where a run's log was truncated.
const MarkerPrefix = "[pgrelay] log truncated at "

// LogLimit keeps a run's log within a number of bytes of text. Lines are
// kept while the log is under the limit; the line that reaches it is cut
// there and followed by one marker line; program output after that is
// dropped (and counted). pgrelay's own lines (stream "system": step starts
// and ends, the outcome) are always kept: there are a few per step, so they
// stay bounded. A LogLimit is not safe for concurrent use.
type LogLimit struct {
	max       int64
	used      int64
	dropped   int64
	truncated bool
}

// NewLogLimit returns a limit of max bytes (DefaultLogLimit when max <= 0).
func NewLogLimit(max int64) *LogLimit {
	if max <= 0 {
		max = DefaultLogLimit
	}
	return &LogLimit{max: max}
}

// Admit returns the lines to append to the log for l, in order: l itself
// while the log is under its limit; the part of l that fits, followed by the
// marker line, when l reaches the limit; nothing for program output once
// the log was truncated.
func (g *LogLimit) Admit(l LogLine) []LogLine {
	n := int64(len(l.Text))
	switch {
	case l.Stream == StreamSystem:
		g.used += n
		return []LogLine{l}
	case g.truncated:
		g.dropped += n
		return nil
	case g.used+n <= g.max:
		g.used += n
		return []LogLine{l}
	}
	// l reaches the limit: keep what fits, cut at a character boundary.
	room := max(g.max-g.used, 0)
	for room > 0 && !utf8.RuneStart(l.Text[room]) {
		room--
	}
	g.truncated = true
	g.dropped += n - room
	g.used += room
	var out []LogLine
	if room > 0 {
		part := l
		part.Text = l.Text[:room]
		out = append(out, part)
	}
	return append(out, LogLine{Time: l.Time, Stream: StreamSystem, Step: -1, Text: g.Marker()})
}

// Truncated reports whether output was dropped.
func (g *LogLimit) Truncated() bool { return g.truncated }

// Dropped is how many bytes of output were dropped so far.
func (g *LogLimit) Dropped() int64 { return g.dropped }

// Marker is the text of the marker line, with the bytes dropped so far.
func (g *LogLimit) Marker() string {
	return fmt.Sprintf("%s%s (--run-log-limit): %d further bytes of output (%s) not kept",
		MarkerPrefix, FormatSize(g.max), g.dropped, humanize.IBytes(uint64(g.dropped)))
}

// FormatSize writes a number of bytes exactly, in the largest binary unit
// that divides it: "10 MiB", "512 KiB", "1000 bytes".
func FormatSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
