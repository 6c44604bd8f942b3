// Command report turns the raw output of pgrelay's benchmarks
// (internal/bench, run by scripts/bench.sh) into docs/benchmarks.md: the
// machine, whether pgrelay meets its performance targets, tables of ratios
// against OpenSSH's `ssh -L` and a direct connection, a table per
// benchmark with the median of each path, the scale and drop-detection
// results, and the notes in notes.md; and into a PNG chart of the ratios
// (docs/benchmarks.png) that the report shows.
//
// Usage:
//
//	go run ./internal/bench/report -in docs/benchmarks.txt -out docs/benchmarks.md -png docs/benchmarks.png
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
	"path/filepath"
	"runtime"
	"time"
)

func main() {
	in := flag.String("in", "docs/benchmarks.txt", "raw `go test -bench` output to read (- for stdin)")
	out := flag.String("out", "docs/benchmarks.md", "markdown file to write (- for stdout)")
	command := flag.String("command", "", "the command that produced the raw output, quoted in the report")
	chart := flag.String("png", "", "PNG chart to write beside the report (empty: none)")
	flag.Parse()
	if err := run(*in, *out, *command, *chart); err != nil {
		fmt.Fprintf(os.Stderr, "report: %v\n", err)
		os.Exit(1)
	}
}

func run(in, out, command, chart string) error {
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
	meta := reportMeta{
		Date:    time.Now().UTC(),
		Command: command,
		RawFile: in,
		Go:      runtime.Version(),
	}
	if chart != "" {
		img, err := renderChart(chartGroups(res), "pgrelay and OpenSSH ssh -L: speed relative to OpenSSH per benchmark (higher is better)")
		if err != nil {
			return fmt.Errorf("draw chart: %w", err)
		}
		if err := os.WriteFile(chart, img, 0o644); err != nil {
			return fmt.Errorf("write chart: %w", err)
		}
		meta.Chart = filepath.Base(chart)
	}
	var buf bytes.Buffer
	if d, err := time.Parse("2006-01-02T15:04Z", res.config["bench-date"]); err == nil {
		meta.Date = d
	}
	render(&buf, res, machineInfo().recorded(res.config), meta)
	if out == "-" {
		_, err = os.Stdout.Write(buf.Bytes())
		return err
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}
