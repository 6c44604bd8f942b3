// Command pgrelay keeps connections to PostgreSQL, AlloyDB and Databricks
// Lakebase, reaches them directly or through SSH bastions, and runs work over
// them. See `pgrelay --help`.
package main

import (
	"context"
	"os"
	// The zone database, for TZ and CRON_TZ= schedules where the system
	// has none (the FROM scratch container image).
	_ "time/tzdata"

	"github.com/pgrelay/pgrelay/internal/cli"
	"github.com/pgrelay/pgrelay/internal/pid1"
)

func main() {
	if pid1.Needed() {
		// The first process of a container: pgrelay runs as this one's
		// child, and this one reaps what the kernel hands to PID 1.
		if exe, err := os.Executable(); err == nil {
			os.Exit(pid1.Supervise(exe, os.Args[1:], os.Environ(), os.Stderr))
		}
	}
	os.Exit(cli.Execute(context.Background(), cli.OSEnv(), os.Args[1:]))
}
