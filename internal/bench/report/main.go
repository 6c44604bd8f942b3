// Command report turns the raw output of pgrelay's benchmarks
// (internal/bench, run by scripts/bench.sh) into docs/benchmarks.md: the
// machine, a table per benchmark with the median of each path and its ratio
// to OpenSSH's `ssh -L` and to a direct connection, and whether pgrelay
// meets its performance targets.
//
// Usage:
//
//	go run ./internal/bench/report -in docs/benchmarks.txt -out docs/benchmarks.md
//
// It reads the standard Go benchmark format, including the configuration
// lines ("key: value") that the benchmarks print (postgresql, openssh,
// the negotiated ciphers). Medians are computed here; benchstat is not
// needed.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"
)

func main() {
	in := flag.String("in", "docs/benchmarks.txt", "raw `go test -bench` output to read (- for stdin)")
	out := flag.String("out", "docs/benchmarks.md", "markdown file to write (- for stdout)")
	command := flag.String("command", "", "the command that produced the raw output, quoted in the report")
	flag.Parse()
	if err := run(*in, *out, *command); err != nil {
		fmt.Fprintf(os.Stderr, "report: %v\n", err)
		os.Exit(1)
	}
}

func run(in, out, command string) error {
	var raw []byte
	var err error
	if in == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(in)
	}
	if err != nil {
		return fmt.Errorf("read benchmark output: %w", err)
	}
	res, err := parse(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("parse %s: %w", in, err)
	}
	if len(res.samples) == 0 {
		return fmt.Errorf("no benchmark results in %s", in)
	}
	var buf bytes.Buffer
	render(&buf, res, machineInfo(), reportMeta{
		Date:    time.Now().UTC(),
		Command: command,
		RawFile: in,
		Go:      runtime.Version(),
	})
	if out == "-" {
		_, err = os.Stdout.Write(buf.Bytes())
		return err
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
