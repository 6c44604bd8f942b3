package jobs

import (
	"strings"
	"testing"
)

// TestCaptureMasksSecretsAcrossPieces: a line longer than the read buffer
// is logged in pieces, and neither the connection's password nor the
// run's own password of its endpoint (token connections) shows in the
// log when it straddles two pieces.
func TestCaptureMasksSecretsAcrossPieces(t *testing.T) {
	t.Parallel()
	for name, x := range map[string]*run{
		"password":     {secret: "conn-pw-0123456789abcdef"},
		"run password": {secret: "qq", localSecret: "run-local-pw-0123456789abcdef"},
	} {
		t.Run(name, func(t *testing.T) {
			var logged strings.Builder
			x.hooks.Log = func(l LogLine) { logged.WriteString(l.Text) }
			s := x.secret
			if x.localSecret != "" {
				s = x.localSecret
			}
			// The secret starts 5 bytes before the 64 KiB read buffer ends.
			line := strings.Repeat("a", 64<<10-5) + s + strings.Repeat("b", 100) + "\n"
			x.capture(0, StreamStdout, strings.NewReader(line))
			if strings.Contains(logged.String(), s) || !strings.Contains(logged.String(), "[redacted]") {
				t.Errorf("the secret straddling two pieces was not masked (%d bytes logged)", logged.Len())
			}
		})
	}
}

// TestCaptureWaitsForLogRoom: each line of a program's output waits for
// room in the log (Hooks.WaitLogRoom) before it is read on, outside the
// run's lock, so that a program printing faster than its log is saved is
// held back instead of filling memory.
func TestCaptureWaitsForLogRoom(t *testing.T) {
	t.Parallel()
	x := &run{}
	lines, waits := 0, 0
	x.hooks.Log = func(LogLine) { lines++ }
	x.hooks.WaitLogRoom = func() {
		if !x.mu.TryLock() {
			t.Error("WaitLogRoom called with the run's lock held")
			return
		}
		x.mu.Unlock()
		waits++
	}
	x.capture(0, StreamStdout, strings.NewReader(strings.Repeat("\n", 1000)+"last\n"))
	if lines != 1001 || waits != lines {
		t.Fatalf("%d lines logged, %d waits for room; want a wait before each", lines, waits)
	}
}
