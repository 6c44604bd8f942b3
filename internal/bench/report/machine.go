package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// machine describes the computer the report is generated on, which
// scripts/bench.sh makes the one the benchmarks ran on.
type machine struct {
	CPU    string
	Cores  int
	Memory string
	Kernel string
	// Load is /proc/loadavg's 1, 5 and 15 minute load averages when the
	// report is made, right after the run: a load above the core count
	// means other work competed with the benchmarks.
	Load string
}

// machineInfo reads the machine's description from /proc; what cannot be
// read is "unknown".
func machineInfo() machine {
	m := machine{CPU: "unknown", Memory: "unknown", Kernel: "unknown", Load: "unknown"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			key, value, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(key) {
			case "processor":
				m.Cores++
			case "model name":
				if m.CPU == "unknown" {
					m.CPU = strings.TrimSpace(value)
				}
			}
		}
		_ = f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.Memory = memTotal(string(b))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.Load = strings.Join(f[:3], " ")
		}
	}
	return m
}

// recorded returns m with what scripts/bench.sh recorded in the raw
// output at the end of the run (machine-cpu, machine-cores,
// machine-memory-kb, machine-kernel, machine-load) in place of what this
// computer says now: a report regenerated later, or elsewhere, still
// describes the machine and the load of the run.
func (m machine) recorded(config map[string]string) machine {
	if v := config["machine-cpu"]; v != "" {
		m.CPU = v
	}
	if n, err := strconv.Atoi(config["machine-cores"]); err == nil && n > 0 {
		m.Cores = n
	}
	if v := config["machine-memory-kb"]; v != "" {
		m.Memory = memTotal("MemTotal: " + v + " kB\n")
	}
	if v := config["machine-kernel"]; v != "" {
		m.Kernel = "Linux " + v
	}
	if v := config["machine-load"]; v != "" {
		m.Load = v
	}
	return m
}

// memTotal formats the MemTotal line of /proc/meminfo in GiB.
func memTotal(meminfo string) string {
	for line := range strings.Lines(meminfo) {
		rest, ok := strings.CutPrefix(line, "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		kb, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			break
		}
		return fmt.Sprintf("%.1f GiB", kb/(1<<20))
	}
	return "unknown"
}
