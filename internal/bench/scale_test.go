package bench_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/testenv"
)

// scaleConfig is the shape of the scale benchmark, from the environment:
// PGRELAY_BENCH_TUNNELS (default 500), PGRELAY_BENCH_OPEN_CONCURRENCY
// (tunnels opened at a time, default 8) and PGRELAY_BENCH_IDLE (the idle
// window over which CPU is measured, default 20s). PGRELAY_BENCH_HOLD_CPUPROFILE
// names a file for a CPU profile of the process holding pgrelay's tunnels.
type scaleConfig struct {
	tunnels, concurrency int
	idle                 time.Duration
}

func scaleSettings(b *testing.B) scaleConfig {
	c := scaleConfig{tunnels: 500, concurrency: 8, idle: 20 * time.Second}
	for _, v := range []struct {
		name string
		dst  *int
	}{{"PGRELAY_BENCH_TUNNELS", &c.tunnels}, {"PGRELAY_BENCH_OPEN_CONCURRENCY", &c.concurrency}} {
		if s := os.Getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				b.Fatalf("%s=%q: want a positive number", v.name, s)
			}
			*v.dst = n
		}
	}
	if s := os.Getenv("PGRELAY_BENCH_IDLE"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Second {
			b.Fatalf("PGRELAY_BENCH_IDLE=%q: want a duration of 1s or more", s)
		}
		c.idle = d
	}
	return c
}

// settle is the pause between opening the tunnels and the idle window.
const settle = 2 * time.Second

// BenchmarkScale holds many tunnels open at once, each its own SSH
// connection with keepalives every second (three missed allowed), as
// concurrent runs do, and measures: the time to open each (p50, p99; so
// many opened at a time), the resident memory of the process(es) holding
// them, and their CPU time over an idle window, as a percentage of one
// core. pgrelay's tunnels are held by a helper process (cmd/holdtunnels:
// tunnel.Dial and nothing else), so that its memory is pgrelay's alone;
// OpenSSH's are `ssh -N -L` processes, one per tunnel, whose memory is
// summed (RSS counts shared pages in every process, PSS shares them out).
// The bastion's CPU over the same window is reported too.
func BenchmarkScale(b *testing.B) {
	e := sharedEnv(b)
	sc := scaleSettings(b)
	b.Run("pgrelay", func(b *testing.B) {
		var r scaleResult
		for b.Loop() {
			r = e.scalePgrelay(b, sc)
		}
		r.report(b)
	})
	b.Run("openssh", func(b *testing.B) {
		var r scaleResult
		for b.Loop() {
			r = e.scaleOpenSSH(b, sc)
		}
		r.report(b)
	})
}

// scaleResult is one scale measurement.
type scaleResult struct {
	tunnels     int
	concurrency int
	open        []time.Duration
	openWall    time.Duration
	rssKiB      int64 // summed VmRSS
	pssKiB      int64 // summed PSS
	baseKiB     int64 // the holding process's RSS before the first tunnel (pgrelay)
	idleCPU     time.Duration
	sshdCPU     time.Duration
	idle        time.Duration
	processes   int
	heapLive    uint64 // Go, pgrelay only
	heapStacks  uint64
	goTotal     uint64
	goroutines  uint64
	recentReply int // tunnels with a recent keepalive reply at the end (pgrelay)
}

func (r scaleResult) report(b *testing.B) {
	if len(r.open) == 0 {
		return
	}
	const mb = 1e6 // the targets are in MB
	b.ReportMetric(float64(r.tunnels), "tunnels")
	b.ReportMetric(float64(r.concurrency), "open-concurrency")
	b.ReportMetric(float64(percentile(r.open, 50).Nanoseconds()), "open-p50-ns")
	b.ReportMetric(float64(percentile(r.open, 99).Nanoseconds()), "open-p99-ns")
	b.ReportMetric(float64(r.openWall.Nanoseconds()), "open-all-ns")
	b.ReportMetric(float64(r.rssKiB)*1024/mb, "rss-MB")
	b.ReportMetric(float64(r.pssKiB)*1024/mb, "pss-MB")
	b.ReportMetric(100*r.idleCPU.Seconds()/r.idle.Seconds(), "idle-cpu-%")
	b.ReportMetric(100*r.sshdCPU.Seconds()/r.idle.Seconds(), "sshd-idle-cpu-%")
	b.ReportMetric(float64(r.processes), "processes")
	if r.baseKiB > 0 {
		b.ReportMetric(float64(r.baseKiB)*1024/mb, "base-rss-MB")
		b.ReportMetric(float64(r.heapLive)/mb, "go-heap-MB")
		b.ReportMetric(float64(r.heapStacks)/mb, "go-stacks-MB")
		b.ReportMetric(float64(r.goTotal)/mb, "go-total-MB")
		b.ReportMetric(float64(r.goroutines), "goroutines")
		b.ReportMetric(float64(r.recentReply), "keepalive-ok")
	}
}

// percentile returns the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// sshdCPU is the bastion's CPU time so far.
func (e *env) sshdCPU() time.Duration {
	var d time.Duration
	procs := readAllStats()
	for _, p := range procs {
		if p.ppid == os.Getpid() && p.comm == "sshd" {
			d += treeCPU(procs, p.pid)
		}
	}
	return d
}

// scalePgrelay opens the tunnels in a holdtunnels process.
func (e *env) scalePgrelay(b *testing.B, sc scaleConfig) scaleResult {
	cmd := exec.Command(e.holdTunnels,
		"-addr", e.bastion.Addr(), "-user", e.bastion.User,
		"-key", e.keyFile, "-host-key", e.hostKeyFile,
		"-n", strconv.Itoa(sc.tunnels), "-concurrency", strconv.Itoa(sc.concurrency),
		"-keepalive", dropInterval.String(), "-keepalive-count", strconv.Itoa(dropCount))
	if f := os.Getenv("PGRELAY_BENCH_HOLD_CPUPROFILE"); f != "" {
		// A CPU profile of the process holding the tunnels, from the end
		// of opening to the end of the idle window.
		cmd.Args = append(cmd.Args, "-cpuprofile", f)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	var stderr testenv.LogBuffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		b.Fatalf("run holdtunnels: %v", err)
	}
	exited := make(chan struct{})
	defer func() {
		_ = stdin.Close()
		select {
		case <-exited:
		case <-time.After(time.Minute):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	dec := json.NewDecoder(bufio.NewReader(stdout))
	lines := make(chan json.RawMessage, 8) // the helper prints three lines: opened, stats, closed
	go func() {
		defer close(exited)
		for {
			var m json.RawMessage
			if err := dec.Decode(&m); err != nil {
				break
			}
			lines <- m
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()
	next := func(v any) {
		select {
		case m := <-lines:
			if err := json.Unmarshal(m, v); err != nil {
				b.Fatalf("holdtunnels said %s: %v", m, err)
			}
		case <-exited:
			b.Fatalf("holdtunnels exited: %s", stderr.String())
		}
	}

	var opened struct {
		Tunnels        int     `json:"tunnels"`
		Failed         int     `json:"failed"`
		Error          string  `json:"error"`
		OpenNanos      []int64 `json:"open_ns"`
		BaselineRSSKiB int64   `json:"baseline_rss_kib"`
		WallNanos      int64   `json:"wall_ns"`
	}
	next(&opened)
	if opened.Failed > 0 || opened.Tunnels != sc.tunnels {
		b.Fatalf("holdtunnels opened %d of %d tunnels; first error: %s", opened.Tunnels, sc.tunnels, opened.Error)
	}
	r := scaleResult{tunnels: opened.Tunnels, concurrency: sc.concurrency, baseKiB: opened.BaselineRSSKiB,
		openWall: time.Duration(opened.WallNanos), idle: sc.idle, processes: 1}
	for _, ns := range opened.OpenNanos {
		r.open = append(r.open, time.Duration(ns))
	}

	time.Sleep(settle)
	pid := cmd.Process.Pid
	cpu0, sshd0 := procCPU(pid), e.sshdCPU()
	time.Sleep(sc.idle)
	r.idleCPU, r.sshdCPU = procCPU(pid)-cpu0, e.sshdCPU()-sshd0
	r.rssKiB, r.pssKiB = procMemory(pid)

	if _, err := io.WriteString(stdin, "stats\n"); err != nil {
		b.Fatalf("holdtunnels: %v", err)
	}
	var st struct {
		Up          int    `json:"up"`
		RecentReply int    `json:"recent_reply"`
		HeapLive    uint64 `json:"heap_live"`
		HeapStacks  uint64 `json:"heap_stacks"`
		GoTotal     uint64 `json:"go_total"`
		Goroutines  uint64 `json:"goroutines"`
	}
	next(&st)
	if st.Up != sc.tunnels {
		b.Fatalf("%d of %d tunnels still up after the idle window", st.Up, sc.tunnels)
	}
	r.heapLive, r.heapStacks, r.goTotal, r.goroutines, r.recentReply = st.HeapLive, st.HeapStacks, st.GoTotal, st.Goroutines, st.RecentReply
	return r
}

// scaleOpenSSH opens the tunnels as `ssh -N -L` processes, each
// forwarding a Unix socket (no ports to allocate) to PostgreSQL.
func (e *env) scaleOpenSSH(b *testing.B, sc scaleConfig) scaleResult {
	dir, err := os.MkdirTemp("", "pgr-ssh-")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()

	r := scaleResult{tunnels: sc.tunnels, concurrency: sc.concurrency, idle: sc.idle}
	var mu sync.Mutex
	var procs []*sshForward
	defer func() {
		var wg sync.WaitGroup
		for _, f := range procs {
			wg.Go(f.stop)
		}
		wg.Wait()
	}()
	var firstErr error
	sem := make(chan struct{}, sc.concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range sc.tunnels {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			sock := filepath.Join(dir, strconv.Itoa(i)+".sock")
			args := append([]string{"-N", "-L", sock + ":" + e.pg.Addr()}, e.sshArgs(e.bastion.Port)...)
			args = append(args,
				"-o", "ServerAliveInterval="+strconv.Itoa(int(dropInterval/time.Second)),
				"-o", "ServerAliveCountMax="+strconv.Itoa(dropCount),
				e.bastion.User+"@127.0.0.1")
			t0 := time.Now()
			f := e.spawnSSH(args)
			if f.err != nil {
				mu.Lock()
				firstErr = f.err
				mu.Unlock()
				return
			}
			mu.Lock()
			procs = append(procs, f.sshForward)
			mu.Unlock()
			for {
				if _, err := os.Stat(sock); err == nil {
					break
				}
				select {
				case <-f.exited:
					mu.Lock()
					firstErr = fmt.Errorf("ssh exited: %s", f.stderr.String())
					mu.Unlock()
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
			took := time.Since(t0)
			mu.Lock()
			r.open = append(r.open, took)
			mu.Unlock()
		})
	}
	wg.Wait()
	r.openWall = time.Since(start)
	if firstErr != nil || len(r.open) != sc.tunnels {
		b.Fatalf("opened %d of %d ssh forwards: %v", len(r.open), sc.tunnels, firstErr)
	}
	r.processes = len(procs)

	time.Sleep(settle)
	sum := func() time.Duration {
		var d time.Duration
		for _, f := range procs {
			d += procCPU(f.cmd.Process.Pid)
		}
		return d
	}
	cpu0, sshd0 := sum(), e.sshdCPU()
	time.Sleep(sc.idle)
	r.idleCPU, r.sshdCPU = sum()-cpu0, e.sshdCPU()-sshd0
	for _, f := range procs {
		select {
		case <-f.exited:
			b.Fatalf("an ssh forward exited during the idle window: %s", f.stderr.String())
		default:
		}
		rss, pss := procMemory(f.cmd.Process.Pid)
		r.rssKiB += rss
		r.pssKiB += pss
	}
	return r
}

// procCPU is a live process's CPU time so far (with children it reaped).
func procCPU(pid int) time.Duration {
	st, ok := readStat(pid)
	if !ok {
		return 0
	}
	return st.own + st.reaped
}

// procMemory returns a process's resident set size and proportional set
// size in KiB, from /proc/PID/smaps_rollup.
func procMemory(pid int) (rss, pss int64) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return 0, 0
	}
	for line := range strings.Lines(string(b)) {
		key, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "Rss":
			rss = v
		case "Pss":
			pss = v
		}
	}
	return rss, pss
}
