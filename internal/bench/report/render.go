package main

import (
	_ "embed"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// The paths as the benchmarks name them.
const (
	pathDirect    = "direct"
	pathOpenSSH   = "openssh"
	pathProxy     = "pgrelay_proxy"
	pathInProcess = "pgrelay_inprocess"
	// pathPgrelay is pgrelay's tunnel where proxy and in-process do not
	// differ: setup, scale and drop detection.
	pathPgrelay = "pgrelay"
	// pathExec is `pgrelay exec` running a program with its per-run
	// endpoint; pathOpenSSHPsql its counterpart, spawning ssh -L and
	// running the program through it.
	pathExec        = "pgrelay_exec"
	pathWarm        = "pgrelay_warm"
	pathOpenSSHPsql = "openssh_psql"
	// pathProxyBase is the proxy of the baseline build (the previous
	// release), measured beside the current one.
	pathProxyBase = "pgrelay_proxy_base"
)

// benchSpec says how to show one benchmark.
type benchSpec struct {
	Group    string // benchmark name without "Benchmark" and path
	Short    string // name in the summary and the chart
	Title    string
	About    string
	Unit     string  // the unit read from the output
	Scale    float64 // the value shown is value/Scale
	Shown    string  // the unit shown
	Decimals int
	Higher   bool // a higher value is better (rates)
	Paths    []string
	// CPUScale and CPUShown say how to show the CPU metrics (reported in
	// ns per operation, or per CPUPer); CPUOp names the operation.
	CPUScale float64
	CPUShown string
	CPUOp    string
	// CPUPer is the unit the CPU metrics are reported per: "op"
	// (default) or "GB".
	CPUPer string
}

// cpuUnit is the metric of one CPU kind ("" for the total, "ssh",
// "pgrelay", ...) in s's unit.
func (s benchSpec) cpuUnit(kind string) string {
	per := s.CPUPer
	if per == "" {
		per = "op"
	}
	if kind == "" {
		return "cpu-ns/" + per
	}
	return "cpu-" + kind + "-ns/" + per
}

// specs lists the benchmarks with a table per path, in report order.
var specs = []benchSpec{
	{
		Group: "RoundTrip", Short: "round trip (Go)", Title: "Round trip: Go `SELECT 1` loop with pgx",
		About: "One pgx connection per path; each operation is `QueryRow(\"SELECT 1\").Scan` (one protocol round trip, prepared statement cached).",
		Unit:  "ns/op", Scale: 1e3, Shown: "µs", Decimals: 1,
		Paths:    []string{pathDirect, pathOpenSSH, pathProxy, pathInProcess, pathProxyBase},
		CPUScale: 1e3, CPUShown: "µs", CPUOp: "query",
	},
	{
		Group: "Pgbench/c1", Short: "pgbench -c 1", Title: "Round trip: `pgbench -S -c 1`",
		About: "`pgbench -n -S -c 1 -j 1` for a few seconds against each path's local endpoint (select-only: one indexed `SELECT` per transaction, simple protocol). " +
			"The in-process path has no endpoint for pgbench; the Go loop above covers it.",
		Unit: "tps", Scale: 1, Shown: "tps", Decimals: 0, Higher: true,
		Paths:    []string{pathDirect, pathOpenSSH, pathProxy, pathProxyBase},
		CPUScale: 1e3, CPUShown: "µs", CPUOp: "transaction",
	},
	{
		Group: "Pgbench/c8", Short: "pgbench -c 8", Title: "Round trip: `pgbench -S -c 8` over one tunnel",
		About: "`pgbench -n -S -c 8 -j 2`: eight connections sharing one SSH connection (one `ssh -L`, one pgrelay tunnel), each its own channel.",
		Unit:  "tps", Scale: 1, Shown: "tps", Decimals: 0, Higher: true,
		Paths:    []string{pathDirect, pathOpenSSH, pathProxy, pathProxyBase},
		CPUScale: 1e3, CPUShown: "µs", CPUOp: "transaction",
	},
	{
		Group: "Throughput", Short: "COPY 1 GB", Title: "Throughput: 1 GB `COPY ... TO STDOUT`",
		About: "`COPY (SELECT repeat('x', 1000) FROM generate_series(1, 999000)) TO STDOUT` (10⁹ bytes) read by `pgconn.CopyTo` into `io.Discard` on one open connection per path. MB/s is 10⁶ bytes per second.",
		Unit:  "MB/s", Scale: 1, Shown: "MB/s", Decimals: 0, Higher: true,
		Paths:    []string{pathDirect, pathOpenSSH, pathProxy, pathInProcess, pathProxyBase},
		CPUScale: 1e6, CPUShown: "ms", CPUOp: "GB",
	},
	{
		Group: "TunnelSetup", Short: "setup", Title: "Setup: from start to the first query result",
		About: "`pgrelay`: `tunnel.Dial` (TCP, SSH handshake, public key auth) + pgx connect through `DialContext` + `SELECT 1`. " +
			"`openssh`: spawn `ssh -N -L`, poll the local port every millisecond until it accepts, pgx connect through it + `SELECT 1`. " +
			"`direct`: pgx connect + `SELECT 1`. Closing is not timed. Each pgx connect includes SCRAM-SHA-256 authentication.",
		Unit: "ns/op", Scale: 1e6, Shown: "ms", Decimals: 1,
		Paths:    []string{pathDirect, pathOpenSSH, pathPgrelay},
		CPUScale: 1e6, CPUShown: "ms", CPUOp: "setup",
	},
}

// target is one goal. Ratio targets compare a path's median with the
// base path's (OpenSSH's unless Base says otherwise), and judge every
// round's ratio too; absolute ones compare a value with Bound.
type target struct {
	About  string
	Group  string
	Path   string
	Unit   string
	Bound  float64
	AtMost bool // the value must be ≤ Bound; otherwise ≥ Bound
	// Base is the path the ratio is taken against (default openssh);
	// BaseName names it in the report (default OpenSSH).
	Base, BaseName string
	// Absolute compares the value itself (divided by Scale) with Bound.
	Absolute bool
	Scale    float64
	Shown    string
	// Worst judges the worst sample instead of the median.
	Worst bool
	// BoundUnit, when set, reads the bound from this metric of the same
	// benchmark (median) and adds Bound to it.
	BoundUnit string
	// TunnelCPU adds a second condition: the CPU of the tunnel's process
	// (OpenSSH's ssh, or pgrelay's proxy or exec) per CPUPer at most the
	// base path's, in every round.
	TunnelCPU bool
	// CPUPer is what the CPU metrics are per: "op" (default) or "GB".
	CPUPer string
}

// base returns the path a ratio target compares with.
func (t target) base() string {
	if t.Base != "" {
		return t.Base
	}
	return pathOpenSSH
}

// baseName names the base path in the report.
func (t target) baseName() string {
	if t.BaseName != "" {
		return t.BaseName
	}
	return "OpenSSH"
}

// per is what the target's CPU metrics are per.
func (t target) per() string {
	if t.CPUPer != "" {
		return t.CPUPer
	}
	return "op"
}

// targets are the goals the report judges, in its order.
var targets = append([]target{
	{About: "In-process round trip ≤ 0.8 × OpenSSH (Go loop)", Group: "RoundTrip", Path: pathInProcess, Unit: "ns/op", Bound: 0.8, AtMost: true},
	{About: "Proxy round trip ≤ OpenSSH (Go loop)", Group: "RoundTrip", Path: pathProxy, Unit: "ns/op", Bound: 1.0, AtMost: true},
	{About: "Proxy round trip ≤ OpenSSH (`pgbench -S -c 1`: tps ≥ OpenSSH's)", Group: "Pgbench/c1", Path: pathProxy, Unit: "tps", Bound: 1.0},
	{About: "Proxy round trip ≤ OpenSSH (`pgbench -S -c 8`, one tunnel: tps ≥ OpenSSH's)", Group: "Pgbench/c8", Path: pathProxy, Unit: "tps", Bound: 1.0},
	{About: "Proxy throughput ≥ 1.1 × OpenSSH", Group: "Throughput", Path: pathProxy, Unit: "MB/s", Bound: 1.1},
	{About: "In-process throughput ≥ 1.1 × OpenSSH", Group: "Throughput", Path: pathInProcess, Unit: "MB/s", Bound: 1.1},
	{About: "Setup ≤ 0.4 × spawning ssh", Group: "TunnelSetup", Path: pathPgrelay, Unit: "ns/op", Bound: 0.4, AtMost: true},
	{About: "500 idle tunnels < 150 MB resident", Group: "Scale", Path: pathPgrelay, Unit: "rss-MB", Bound: 150, AtMost: true,
		Absolute: true, Scale: 1, Shown: "MB", Worst: true},
	{About: "Drop detected within interval × count + 1 s (every repetition)", Group: "DropDetection", Path: pathPgrelay, Unit: "ns/op",
		Bound: 1e9, AtMost: true, Absolute: true, Scale: 1e9, Shown: "s", Worst: true, BoundUnit: "limit-ns"},
}, issue15Targets()...)

// issue15Targets are the goals of the real clients, the far bastion and
// the runs across processes.
func issue15Targets() []target {
	var out []target
	// Real clients: every program over the proxy and over exec moves data
	// ≥ 1.1 × as fast as over OpenSSH, with no more CPU per GB.
	for _, c := range clientSpecs {
		for _, p := range []struct{ path, name string }{{pathProxy, "proxy"}, {pathExec, "exec"}} {
			out = append(out, target{
				About: fmt.Sprintf("%s over `pgrelay %s` ≥ 1.1 × OpenSSH, CPU per GB ≤ ssh's", c.Short, p.name),
				Group: c.Group, Path: p.path, Unit: "MB/s", Bound: 1.1, TunnelCPU: true, CPUPer: "GB",
			})
		}
	}
	return append(out,
		target{About: "Time to first row at 25 ms one way ≤ 0.8 × OpenSSH (tunnel.Dial + pgx against spawning ssh -L + pgx)",
			Group: "Far/25ms/first_row", Path: pathPgrelay, Unit: "first-row-ms", Bound: 0.8, AtMost: true},
		target{About: "Time to first row at 25 ms one way ≤ 0.8 × OpenSSH for a run on a tunnel kept from the previous run (`serve --ssh-warm`)",
			Group: "Far/25ms/first_row", Path: pathWarm, Unit: "first-row-ms", Bound: 0.8, AtMost: true},
		target{About: "Time to first row at 25 ms one way ≤ 0.8 × OpenSSH (`pgrelay exec -- psql` against spawning ssh -L, then psql)",
			Group: "Far/25ms/first_row", Path: pathExec, Base: pathOpenSSHPsql, BaseName: "ssh -L + psql",
			Unit: "first-row-ms", Bound: 0.8, AtMost: true},
		target{About: "Runs per minute: 2 serve processes ≥ 1.7 × one (shared PostgreSQL store)",
			Group: "Runs", Path: "p2", Base: "p1", BaseName: "one process", Unit: "runs/min", Bound: 1.7},
		target{About: "Runs per minute with `serve --ssh-warm`: 2 serve processes ≥ 1.7 × one (shared PostgreSQL store)",
			Group: "Runs", Path: "p2_warm", Base: "p1_warm", BaseName: "one process", Unit: "runs/min", Bound: 1.7},
	)
}

// verdict is a target evaluated against results.
type verdict struct {
	target
	Value    float64 // the ratio of medians, or the absolute value (scaled)
	Limit    float64 // the absolute bound (scaled), for absolute targets
	Rounds   []float64
	Measured bool
	Outcome  outcome
	Met      bool
	// CPURatio is the path's CPU per operation over the base path's (0
	// when not measured): of the tunnel's process for TunnelCPU targets,
	// of every process on the path otherwise. CPURounds are per round
	// and CPUOutcome judges them, for TunnelCPU targets.
	CPURatio   float64
	CPURounds  []float64
	CPUOutcome outcome
}

// evaluate checks every target.
func evaluate(res *results) []verdict {
	out := make([]verdict, 0, len(targets))
	for _, t := range targets {
		v := verdict{target: t}
		xs := res.get(t.Group, t.Path, t.Unit)
		value := median(xs)
		if t.Worst && len(xs) > 0 {
			if t.AtMost {
				value = slices.Max(xs)
			} else {
				value = slices.Min(xs)
			}
		}
		if t.Absolute {
			limit := t.Bound
			if t.BoundUnit != "" {
				limit += median(res.get(t.Group, t.Path, t.BoundUnit))
			}
			if len(xs) > 0 && (t.BoundUnit == "" || len(res.get(t.Group, t.Path, t.BoundUnit)) > 0) {
				v.Measured = true
				v.Value, v.Limit = value/t.Scale, limit/t.Scale
				v.Outcome = judge([]float64{v.Value}, v.Limit, t.AtMost)
			}
		} else if base := median(res.get(t.Group, t.base(), t.Unit)); len(xs) > 0 && base > 0 {
			v.Measured = true
			v.Value, v.Limit = value/base, t.Bound
			v.Rounds = roundRatios(res, t.Group, t.Path, t.base(), t.Unit)
			if v.Rounds != nil {
				v.Outcome = judge(v.Rounds, t.Bound, t.AtMost)
			} else {
				v.Outcome = judge([]float64{v.Value}, t.Bound, t.AtMost)
			}
		}
		if t.TunnelCPU {
			per := t.per()
			units := []string{"cpu-ssh-ns/" + per, "cpu-pgrelay-ns/" + per}
			cpu, cpuBase := sumRounds(res, t.Group, t.Path, units...), sumRounds(res, t.Group, t.base(), units...)
			if m, mb := median(cpu), median(cpuBase); m > 0 && mb > 0 {
				v.CPURatio = m / mb
				v.CPURounds = pairRatios(cpu, cpuBase)
				if v.CPURounds != nil {
					v.CPUOutcome = judge(v.CPURounds, 1, true)
				} else {
					v.CPUOutcome = judge([]float64{v.CPURatio}, 1, true)
				}
			}
			v.Outcome = worse(v.Outcome, v.CPUOutcome)
			v.Measured = v.Outcome != notMeasured
		} else {
			cpu, cpuBase := median(res.get(t.Group, t.Path, cpuTotal)), median(res.get(t.Group, t.base(), cpuTotal))
			if cpu > 0 && cpuBase > 0 {
				v.CPURatio = cpu / cpuBase
			}
		}
		v.Met = v.Outcome == met
		out = append(out, v)
	}
	return out
}

// The CPU metrics the benchmarks report, in ns/op: this process (pgx and
// the in-process tunnel), OpenSSH's ssh client, the `pgrelay proxy`
// process, the bastion's sshd, and their sum.
const (
	cpuTotal   = "cpu-ns/op"
	cpuClient  = "cpu-client-ns/op"
	cpuSSH     = "cpu-ssh-ns/op"
	cpuPgrelay = "cpu-pgrelay-ns/op"
	cpuSSHD    = "cpu-sshd-ns/op"
)

// reportMeta is what the report says about its own making.
type reportMeta struct {
	Date    time.Time
	Command string
	RawFile string
	Go      string
	Chart   string // the chart's file name beside the report; empty: none
}

// notes is the part of the report written by hand: what profiling found
// and what was changed. It is kept here so that regenerating the report
// keeps it.
//
//go:embed notes.md
var notes string

// render writes the markdown report.
func render(w io.Writer, res *results, m machine, meta reportMeta) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	cfg := func(key string) string {
		if v := res.config[key]; v != "" {
			return v
		}
		return "unknown"
	}

	p("# Benchmarks")
	p("")
	p("Generated by `scripts/bench.sh` (`make bench`) on %s from the raw output in `%s`; "+
		"regenerate rather than edit (the notes at the end live in `internal/bench/report/notes.md`). "+
		"Every server runs on loopback on the same machine: a throwaway PostgreSQL and a real OpenSSH `sshd` as the bastion "+
		"(internal/testenv, with `MaxStartups 1000:30:2000` and `MaxSessions 1000` so that sshd is not the limit).",
		meta.Date.Format("2006-01-02 15:04 MST"), meta.RawFile)
	p("")
	p("The paths, side by side in the same run:")
	p("")
	p("- `direct`: TCP straight to PostgreSQL.")
	p("- `openssh`: a long-lived `ssh -N -L 127.0.0.1:PORT:db` to the bastion; clients connect to the local port.")
	p("- `pgrelay_proxy`: the real `pgrelay proxy` command (a separate process built from `cmd/pgrelay`, run on a connection " +
		"saved in a throwaway data dir with `pgrelay connection create`), one tunnel; clients connect to its local port.")
	p("- `pgrelay_inprocess`: pgx's `DialFunc` = `tunnel.DialContext` in the benchmark process: no local port.")
	p("- `pgrelay` (setup, scale, drop detection): pgrelay's tunnel itself, which both pgrelay paths use.")
	p("")
	if meta.Command != "" {
		p("Command: `%s`", meta.Command)
		p("")
	}
	p("Every figure is the median of the repetitions (runs) shown in the detail tables; ratios are of medians.")
	p("")

	goVersion := res.config["go"]
	if goVersion == "" {
		goVersion = meta.Go
	}
	p("## Machine")
	p("")
	p("| | |")
	p("|---|---|")
	cpu := m.CPU
	if c := res.config["cpu"]; c != "" && cpu == "unknown" {
		cpu = c
	}
	p("| CPU | %s |", cpu)
	p("| Cores | %d |", m.Cores)
	p("| Memory | %s |", m.Memory)
	p("| Kernel | %s |", m.Kernel)
	p("| Load average after the run (1, 5, 15 min) | %s |", m.Load)
	p("| Go | %s %s/%s |", goVersion, cfg("goos"), cfg("goarch"))
	p("| OpenSSH (client and server) | %s |", cfg("openssh"))
	p("| PostgreSQL, pgbench | %s, %s |", cfg("postgresql"), cfg("pgbench"))
	p("| OpenSSH `ssh` negotiated | %s, %s |", cfg("openssh-cipher"), cfg("openssh-kex"))
	p("| pgrelay tunnel negotiated | %s, %s |", cfg("pgrelay-cipher"), cfg("pgrelay-kex"))
	p("")
	p("Other work shares this machine (a load average above the core count means it competed with the benchmarks), " +
		"so wall times are noisy; the CPU time per operation, measured per process, is steadier and is shown beside them.")
	p("")

	renderTargets(w, res)
	renderSummary(w, res, meta)
	for _, s := range specs {
		renderTable(w, res, s)
	}
	renderScale(w, res)
	renderDrop(w, res)
	renderClients(w, res)
	renderFar(w, res)
	renderRuns(w, res, m)
	renderLogin(w, res)
	renderCipher(w, res)
	renderBaseline(w, res)

	p("%s", strings.TrimSpace(notes))
	p("")
}

// renderTargets writes the targets table and, for each missed target, its
// explanation.
func renderTargets(w io.Writer, res *results) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("## Targets")
	p("")
	p("Judged against OpenSSH's `ssh -N -L` (or the base named), except where an absolute bound is given " +
		"(memory: the one scale run; drop detection: the worst repetition). The measured value is the ratio of medians; " +
		"with more than one round, the range of the ratio over the rounds follows, and a target counts as met only when " +
		"every round meets it: *within noise* means the rounds fall on both sides of the bound, *not met* that none meets it. " +
		"The CPU column is the CPU per operation of every process on the path except PostgreSQL and pgbench, relative to " +
		"OpenSSH's; for the real clients it is the CPU per GB of the tunnel's own process (pgrelay's against ssh's), which " +
		"must not exceed ssh's in any round either.")
	p("")
	p("| target | measured | met | CPU per op |")
	p("|---|---|---|---|")
	var short []verdict
	counts := map[outcome]int{}
	for _, v := range evaluate(res) {
		cpu := "—"
		if v.CPURatio > 0 {
			cpu = fmt.Sprintf("%.2f × %s", v.CPURatio, v.baseName())
			if v.TunnelCPU {
				cpu = fmt.Sprintf("%.2f × ssh's per GB%s", v.CPURatio, rangeNote(v.CPURounds, 2))
			}
		}
		counts[v.Outcome]++
		if !v.Measured {
			p("| %s | not measured | — | %s |", v.About, cpu)
			continue
		}
		if v.Outcome != met {
			short = append(short, v)
		}
		measured := fmt.Sprintf("%.2f × %s%s", v.Value, v.baseName(), rangeNote(v.Rounds, 2))
		if v.Absolute {
			measured = fmt.Sprintf("%s %s (bound %s %s)", num(v.Value, 2), v.Shown, num(v.Limit, 2), v.Shown)
		}
		p("| %s | %s | %s | %s |", v.About, measured, v.Outcome, cpu)
	}
	p("")
	p("%d targets met, %d within noise, %d not met, %d not measured.", counts[met], counts[withinNoise], counts[missed], counts[notMeasured])
	p("")
	if len(short) > 0 {
		p("What bounds each missed target is under [The targets missed here](#the-targets-missed-here-and-what-bounds-them), the measurements behind it under [What profiling found](#what-profiling-found).")
		p("")
	}
}

// renderSummary writes the ratio tables and the chart reference.
func renderSummary(w io.Writer, res *results, meta reportMeta) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("## Summary: ratios of medians")
	p("")
	p("Each cell is the path's median over OpenSSH's (first table) or over the direct connection's (second), with the range " +
		"of the ratio over the rounds in brackets. Time (round trip latency, setup): lower is better. Rate (tps, MB/s): higher is better.")
	p("")
	cols := []string{pathDirect, pathOpenSSH, pathProxy, pathInProcess}
	for _, against := range []string{pathOpenSSH, pathDirect} {
		name := "OpenSSH"
		if against == pathDirect {
			name = "direct"
		}
		p("| × %s | better | direct | openssh | pgrelay proxy | pgrelay in-process |", name)
		p("|---|---|---:|---:|---:|---:|")
		for _, s := range specs {
			better := "lower"
			if s.Higher {
				better = "higher"
			}
			cells := make([]string, 0, len(cols))
			base := median(res.get(s.Group, against, s.Unit))
			for _, c := range cols {
				path := c
				if c == pathInProcess && slices.Contains(s.Paths, pathPgrelay) {
					path = pathPgrelay
				}
				if !slices.Contains(s.Paths, path) {
					cells = append(cells, "—")
					continue
				}
				cell := "—"
				if m := median(res.get(s.Group, path, s.Unit)); path == against && m > 0 {
					cell = "1.00×"
				} else if m > 0 && base > 0 {
					cell = ratioCell(m/base, roundRatios(res, s.Group, path, against, s.Unit))
				}
				cells = append(cells, cell)
			}
			p("| %s | %s | %s |", s.Short, better, strings.Join(cells, " | "))
		}
		p("")
	}
	p("For setup the in-process column is pgrelay's tunnel (`tunnel.Dial`), which `pgrelay proxy` opens the same way.")
	p("")
	if c, pc := res.config["openssh-cipher"], res.config["pgrelay-cipher"]; c != "" && pc != "" {
		p("The paths do not encrypt alike: OpenSSH's `ssh` negotiated %s with the bastion, pgrelay's tunnel (proxy, exec and "+
			"in-process) %s; see [Ciphers](#ciphers-aes-128-gcm-and-chacha20-poly1305) for what each costs here.", c, pc)
		p("")
	}
	if meta.Chart != "" {
		p("![Speed relative to OpenSSH per benchmark and path](%s)", meta.Chart)
		p("")
		p("The chart shows speed relative to OpenSSH (OpenSSH = 1, higher is better for every bar: for times it is "+
			"OpenSSH's time over the path's, for rates the path's rate over OpenSSH's; for memory and idle CPU OpenSSH's "+
			"over pgrelay's). Black marks are the targets. Bars taller than %g× are cut, with their value written above. "+
			"Colours: grey direct, orange OpenSSH, blue `pgrelay proxy`, green pgrelay in-process (or pgrelay's tunnel).", chartCap)
		p("")
	}
}

// renderTable writes one benchmark's table. A path without samples is
// left out when it is optional (the baseline proxy), shown as "—"
// otherwise.
func renderTable(w io.Writer, res *results, s benchSpec) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("## %s", s.Title)
	p("")
	p("%s", s.About)
	p("")
	renderRows(w, res, s)
}

// renderRows writes the rows of one benchmark's table and the note under
// them.
func renderRows(w io.Writer, res *results, s benchSpec) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	ratioNote := "lower is better"
	if s.Higher {
		ratioNote = "higher is better"
	}
	p("| path | median %s | range | runs | × OpenSSH | × direct | CPU %s per %s: total (client / ssh / pgrelay / sshd) | CPU × OpenSSH |",
		s.Shown, s.CPUShown, s.CPUOp)
	p("|---|---:|---:|---:|---:|---:|---:|---:|")
	cpuBase := median(res.get(s.Group, pathOpenSSH, s.cpuUnit("")))
	base := median(res.get(s.Group, pathOpenSSH, s.Unit))
	direct := median(res.get(s.Group, pathDirect, s.Unit))
	for _, path := range s.Paths {
		xs := res.get(s.Group, path, s.Unit)
		if len(xs) == 0 {
			if path != pathProxyBase {
				p("| %s | — | — | 0 | — | — | — | — |", path)
			}
			continue
		}
		med := median(xs)
		cpu, cpuRatio := "—", "—"
		if tot := median(res.get(s.Group, path, s.cpuUnit(""))); tot > 0 {
			c := func(kind string) string { return num(median(res.get(s.Group, path, s.cpuUnit(kind)))/s.CPUScale, 1) }
			cpu = fmt.Sprintf("%s (%s / %s / %s / %s)", num(tot/s.CPUScale, 1), c("client"), c("ssh"), c("pgrelay"), c("sshd"))
			cpuRatio = ratio(tot, cpuBase)
		}
		vsBase := ratio(med, base)
		if path != pathOpenSSH {
			vsBase = ratioCell(med/base, roundRatios(res, s.Group, path, pathOpenSSH, s.Unit))
			if base <= 0 {
				vsBase = "—"
			}
		}
		p("| %s | %s | %s–%s | %d | %s | %s | %s | %s |", path,
			num(med/s.Scale, s.Decimals), num(slices.Min(xs)/s.Scale, s.Decimals), num(slices.Max(xs)/s.Scale, s.Decimals),
			len(xs), vsBase, ratio(med, direct), cpu, cpuRatio)
	}
	p("")
	p("Ratios: %s; × OpenSSH with the range of the ratio over the rounds. CPU is user + system time, medians per column, of "+
		"this process (client: pgx, and for the in-process path pgrelay's tunnel), OpenSSH's `ssh`, pgrelay's process "+
		"(`pgrelay proxy`, or `pgrelay exec` without the program it runs) and the bastion's `sshd`; PostgreSQL and "+
		"pgbench are left out (the same on every path).", ratioNote)
	p("")
}

// renderScale writes the scale table.
func renderScale(w io.Writer, res *results) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	get := func(path, unit string) (float64, bool) {
		xs := res.get("Scale", path, unit)
		return median(xs), len(xs) > 0
	}
	if _, ok := get(pathPgrelay, "tunnels"); !ok {
		if _, ok := get(pathOpenSSH, "tunnels"); !ok {
			return
		}
	}
	p("## Scale: many tunnels held open at once")
	p("")
	p("Each tunnel is its own SSH connection, as concurrent runs have, with keepalives every second (three missed allowed) " +
		"to make their cost visible (pgrelay's default is 30 s). pgrelay's tunnels are held by a helper process " +
		"(`internal/bench/cmd/holdtunnels`: `tunnel.Dial` and nothing else), so that its memory and CPU are pgrelay's alone; " +
		"OpenSSH's are `ssh -N -L` processes, one per tunnel, forwarding a Unix socket. Open time is from the start of " +
		"`tunnel.Dial` (or from spawning ssh) until the tunnel is ready, with several opening at a time. " +
		"Memory is read at the end of the idle window: RSS counts shared pages (the ssh binary, libcrypto) once per " +
		"process, PSS shares them out. Idle CPU is over the idle window, as a percentage of one core.")
	p("")
	row := func(label, unit string, scale float64, decimals int) {
		cells := []string{label}
		for _, path := range []string{pathPgrelay, pathOpenSSH} {
			v, ok := get(path, unit)
			if !ok {
				cells = append(cells, "—")
				continue
			}
			cells = append(cells, num(v/scale, decimals))
		}
		p("| %s |", strings.Join(cells, " | "))
	}
	p("| | pgrelay | openssh |")
	p("|---|---:|---:|")
	row("tunnels", "tunnels", 1, 0)
	row("opened at a time", "open-concurrency", 1, 0)
	row("processes", "processes", 1, 0)
	row("open time p50 (ms)", "open-p50-ns", 1e6, 1)
	row("open time p99 (ms)", "open-p99-ns", 1e6, 1)
	row("all opened after (s)", "open-all-ns", 1e9, 1)
	row("resident memory, RSS (MB)", "rss-MB", 1, 1)
	row("resident memory, PSS (MB)", "pss-MB", 1, 1)
	row("RSS before the first tunnel (MB)", "base-rss-MB", 1, 1)
	row("Go heap objects (MB)", "go-heap-MB", 1, 1)
	row("Go stacks (MB)", "go-stacks-MB", 1, 1)
	row("Go runtime total (MB)", "go-total-MB", 1, 1)
	row("goroutines", "goroutines", 1, 0)
	row("tunnels with a keepalive reply in the last 3 s", "keepalive-ok", 1, 0)
	row("idle CPU, % of one core", "idle-cpu-%", 1, 2)
	row("bastion sshd idle CPU, % of one core", "sshd-idle-cpu-%", 1, 2)
	if runs := len(res.get("Scale", pathPgrelay, "rss-MB")); runs > 1 {
		p("")
		p("Medians of %d runs.", runs)
	}
	p("")
}

// renderDrop writes the drop-detection table.
func renderDrop(w io.Writer, res *results) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	if len(res.get("DropDetection", pathPgrelay, "ns/op")) == 0 && len(res.get("DropDetection", pathOpenSSH, "ns/op")) == 0 {
		return
	}
	p("## Drop detection: from a frozen bastion path to the error")
	p("")
	p("A fault proxy (testenv.FaultProxy) between client and bastion stops passing bytes while keeping both sockets open; " +
		"the time runs from the freeze until pgrelay's tunnel reports the drop (`Tunnel.Done`; every connection through it " +
		"fails at the same moment) or `ssh -N -L` exits. Keepalives every 1 s, 3 missed allowed (pgrelay: " +
		"`KeepaliveInterval`, `KeepaliveCountMax`; OpenSSH: `ServerAliveInterval`, `ServerAliveCountMax`); an open " +
		"PostgreSQL connection goes through each; the freeze comes a random time after a keepalive.")
	p("")
	p("| path | median s | range s | runs | interval × count s |")
	p("|---|---:|---:|---:|---:|")
	for _, path := range []string{pathPgrelay, pathOpenSSH} {
		xs := res.get("DropDetection", path, "ns/op")
		if len(xs) == 0 {
			continue
		}
		p("| %s | %s | %s–%s | %d | %s |", path, num(median(xs)/1e9, 2), num(slices.Min(xs)/1e9, 2), num(slices.Max(xs)/1e9, 2),
			len(xs), num(median(res.get("DropDetection", path, "limit-ns"))/1e9, 0))
	}
	p("")
	p("pgrelay measures the silence from the last keepalive reply, so it drops at most interval × count after the last " +
		"sign of life; OpenSSH counts unanswered keepalives, sent after an interval without traffic, and so drops between " +
		"count and count + 1 intervals after it.")
	p("")
}

func num(v float64, decimals int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmt.Sprintf("%.*f", decimals, v)
}

func ratio(v, base float64) string {
	if base <= 0 || v <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", v/base)
}
