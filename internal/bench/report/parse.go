package main

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// results is what a benchmark run printed.
type results struct {
	// config holds the configuration lines ("goos: linux"), first value
	// of each key.
	config map[string]string
	// samples holds every measurement, keyed by benchmark name without
	// the GOMAXPROCS suffix ("RoundTrip/direct") and then by unit.
	samples map[string]map[string][]float64
}

var (
	// benchLine matches "BenchmarkName-2   1234   5678 ns/op   9.1 MB/s".
	benchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+(\d+)\s+(.+)$`)
	// configLine matches "key: value" with a lower-case key.
	configLine = regexp.MustCompile(`^([a-z][a-z0-9-]*):\s*(.*)$`)
)

// parse reads Go benchmark output.
func parse(r io.Reader) (*results, error) {
	res := &results{config: map[string]string{}, samples: map[string]map[string][]float64{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t\r")
		if m := benchLine.FindStringSubmatch(line); m != nil {
			fields := strings.Fields(m[3])
			if len(fields)%2 != 0 {
				return nil, fmt.Errorf("benchmark line %q: values and units do not pair up", line)
			}
			for i := 0; i < len(fields); i += 2 {
				v, err := strconv.ParseFloat(fields[i], 64)
				if err != nil {
					return nil, fmt.Errorf("benchmark line %q: value %q: %w", line, fields[i], err)
				}
				res.add(m[1], fields[i+1], v)
			}
			continue
		}
		if m := configLine.FindStringSubmatch(line); m != nil {
			if _, seen := res.config[m[1]]; !seen {
				res.config[m[1]] = m[2]
			}
		}
	}
	return res, sc.Err()
}

func (r *results) add(name, unit string, v float64) {
	units := r.samples[name]
	if units == nil {
		units = map[string][]float64{}
		r.samples[name] = units
	}
	units[unit] = append(units[unit], v)
}

// get returns the samples of benchmark group/path in unit.
func (r *results) get(group, path, unit string) []float64 {
	return r.samples[group+"/"+path][unit]
}

// median returns the median of xs, or 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	mid := len(s) / 2
	if len(s)%2 == 1 {
		return s[mid]
	}
	return (s[mid-1] + s[mid]) / 2
}
