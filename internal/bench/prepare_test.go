package bench_test

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// prepared is one piece of data or one set of processes made once per
// test process for the benchmarks that need it (see env.prepare).
type prepared struct {
	once sync.Once
	err  error
}

// prepare runs f once per test process, the first time a benchmark asks
// for key, under a processTB whose cleanups run when the process ends,
// and fails b when f failed (then and on every later call).
func (e *env) prepare(b *testing.B, key string, f func(tb *processTB)) {
	b.Helper()
	e.prepMu.Lock()
	if e.prep == nil {
		e.prep = map[string]*prepared{}
	}
	p := e.prep[key]
	if p == nil {
		p = &prepared{}
		e.prep[key] = p
	}
	e.prepMu.Unlock()
	p.once.Do(func() {
		tb := &processTB{name: "bench-" + key}
		sharedTB.Cleanup(tb.runCleanups)
		start := time.Now()
		if !tb.run(func() { f(tb) }) {
			p.err = fmt.Errorf("bench: prepare %s:\n%s", key, tb.report())
			return
		}
		fmt.Fprintf(os.Stderr, "bench: prepared %s in %v\n", key, time.Since(start).Round(time.Millisecond))
	})
	if p.err != nil {
		b.Fatal(p.err)
	}
}

// envInt reads a positive integer setting from the environment, def when
// unset.
func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive whole number", name, s)
	}
	return n
}
