package cli

import (
	"runtime"
	"runtime/debug"
)

// Runtime settings of the commands whose work is moving one SSH
// connection's data through a local endpoint (`pgrelay proxy`, `pgrelay
// exec`), unless GOGC or GOMAXPROCS are set: the garbage collector's
// target (as GOGC) and the number of processors running Go code.
const (
	relayGCPercent = 400
	relayMaxProcs  = 1
)

// relayRuntime sets the Go runtime for moving one SSH connection's data
// (docs/benchmarks.md) and returns the function that restores the
// previous settings. GOGC and GOMAXPROCS in the environment override it.
//
// The SSH library allocates a fresh buffer for every packet it receives
// (up to 32 KiB), so bulk transfers make garbage at their own rate while
// the live heap stays small: collecting at 5× the live heap instead of 2×
// saves about 10% of the CPU per GB copied, for a few MB of memory. It
// reads and decrypts the connection on one goroutine and hands each
// packet on through two more, so a second processor adds little but
// cross-thread wake-ups: with one, the CPU per query falls by 15–27% and
// per GB copied by about a fifth (for `pgrelay exec`, from 1.5 to 0.9 s
// per GB), at the same or a better speed.
func (r *runner) relayRuntime() (restore func()) {
	var undo []func()
	if r.env.Getenv("GOGC") == "" {
		prev := debug.SetGCPercent(relayGCPercent)
		undo = append(undo, func() { debug.SetGCPercent(prev) })
	}
	if r.env.Getenv("GOMAXPROCS") == "" {
		prev := runtime.GOMAXPROCS(relayMaxProcs)
		undo = append(undo, func() { runtime.GOMAXPROCS(prev) })
	}
	return func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
}
