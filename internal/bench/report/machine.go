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
