package queue

import (
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
)

// TestLogBufferHoldsBackFastOutput: a program printing empty lines as fast
// as it can, against a store that takes a batch only every few
// milliseconds, is held back by waitRoom: the lines waiting in memory stay
// near maxPending. They grew without bound (a few hundred bytes per empty
// line: gigabytes before a 10 MiB log reached its limit).
func TestLogBufferHoldsBackFastOutput(t *testing.T) {
	t.Parallel()
	b := newLogBuffer(1 << 40) // no limit reached here
	const lines = 500_000
	done := make(chan struct{})
	peak := 0
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the flusher: a slow store
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-b.full:
			case <-time.After(20 * time.Millisecond):
			}
			time.Sleep(20 * time.Millisecond) // the store takes its time
			b.mu.Lock()
			peak = max(peak, b.size)
			b.mu.Unlock()
			b.take()
		}
	}()
	for range lines {
		b.waitRoom()
		b.add(jobs.LogLine{Stream: jobs.StreamStdout})
	}
	close(done)
	wg.Wait()
	if limit := maxPending + lineOverhead; peak > limit {
		t.Fatalf("%d bytes of lines waited in memory, want at most %d", peak, limit)
	}
}
