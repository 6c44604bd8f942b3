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

// lineBreak is what a line counts beyond its text: the line break that
// ended it in the program's output (none for a piece of a longer line).
// Counted, it bounds the number of lines a log keeps as well as their
// text: a program printing only empty lines would otherwise fill the store
// (a row each) and the memory of the process that runs it without ever
// reaching the limit.
func lineBreak(l LogLine) int64 {
	if l.piece {
		return 0
	}
	return 1
}

// LogLimit keeps a run's log within a number of bytes of output: each line
// counts its text and its line break. Lines are kept while the log is
// under the limit; the line that reaches it is cut there and followed by
// one marker line; program output after that is dropped (and counted).
// pgrelay's own lines (stream "system": step starts and ends, the outcome)
// are always kept: there are a few per step, so they stay bounded. A
// LogLimit is not safe for concurrent use.
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
	lb := lineBreak(l)
	n := int64(len(l.Text)) + lb
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
	// l reaches the limit: keep what fits with its line break, cut at a
	// character boundary.
	room := max(g.max-g.used-lb, 0)
	for room > 0 && !utf8.RuneStart(l.Text[room]) {
		room--
	}
	g.truncated = true
	var out []LogLine
	if room == 0 {
		g.dropped += n
	} else {
		g.dropped += n - room - lb
		g.used += room + lb
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
