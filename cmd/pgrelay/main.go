// Command pgrelay keeps connections to PostgreSQL, AlloyDB and Databricks
// Lakebase, reaches them directly or through SSH bastions, and runs work over
// them. See `pgrelay --help`.
package main

import (
	"context"
	"os"

	"github.com/pgrelay/pgrelay/internal/cli"
)

func main() {
	os.Exit(cli.Execute(context.Background(), cli.OSEnv(), os.Args[1:]))
}
