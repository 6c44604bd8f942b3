package cli

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// TestRelayRuntime checks the runtime settings of proxy and exec: GOGC
// 400 and one processor while they run, the previous settings after, and
// none of it when GOGC and GOMAXPROCS are set in the environment.
func TestRelayRuntime(t *testing.T) {
	gcPercent := func() int {
		v := debug.SetGCPercent(-1)
		debug.SetGCPercent(v)
		return v
	}
	procs, gc := runtime.GOMAXPROCS(0), gcPercent()

	r := &runner{env: Env{Getenv: func(string) string { return "" }}}
	restore := r.relayRuntime()
	if got := runtime.GOMAXPROCS(0); got != relayMaxProcs {
		t.Errorf("GOMAXPROCS while relaying = %d, want %d", got, relayMaxProcs)
	}
	if got := gcPercent(); got != relayGCPercent {
		t.Errorf("GC percent while relaying = %d, want %d", got, relayGCPercent)
	}
	restore()
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Errorf("GOMAXPROCS after = %d, want %d as before", got, procs)
	}
	if got := gcPercent(); got != gc {
		t.Errorf("GC percent after = %d, want %d as before", got, gc)
	}

	set := &runner{env: Env{Getenv: func(k string) string {
		if k == "GOGC" || k == "GOMAXPROCS" {
			return "7"
		}
		return ""
	}}}
	restore = set.relayRuntime()
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Errorf("GOMAXPROCS with GOMAXPROCS set = %d, want it left at %d", got, procs)
	}
	if got := gcPercent(); got != gc {
		t.Errorf("GC percent with GOGC set = %d, want it left at %d", got, gc)
	}
	restore()
}
