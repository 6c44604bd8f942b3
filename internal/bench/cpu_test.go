package bench_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ,
// 100 Hz on Linux).
const clockTick = 10 * time.Millisecond

// cpuSample is the CPU time (user + system) used so far by the processes
// on a path other than PostgreSQL and pgbench, whose share is the same on
// every path.
type cpuSample struct {
	// client is this process: pgx, and pgrelay's in-process tunnel.
	client time.Duration
	// ssh is OpenSSH's ssh client: the long-lived forward, plus the ones
	// spawned and reaped by the setup benchmark.
	ssh time.Duration
	// pgrelay is the `pgrelay proxy` processes (the current build's and,
	// when there is one, the baseline's) and the `pgrelay exec` processes
	// that have exited, without the programs they ran.
	pgrelay time.Duration
	// sshd is the bastion: the listening sshd and all its descendants,
	// reaped ones included.
	sshd time.Duration
}

// sampleCPU reads the CPU time of the processes on the paths: this
// process from getrusage, the others from /proc, and ssh processes that
// have exited from their rusage when reaped (see spawnSSH).
func (e *env) sampleCPU() cpuSample {
	var s cpuSample
	var self syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &self) == nil {
		s.client = rusageTime(&self)
	}
	s.ssh = time.Duration(e.reapedSSH.Load())
	e.fwdMu.Lock()
	fwds := append([]*sshForward{e.forward}, e.forwards...)
	e.fwdMu.Unlock()
	for _, f := range fwds {
		if f == nil {
			continue
		}
		select {
		case <-f.exited: // counted in reapedSSH
			continue
		default:
		}
		if st, ok := readStat(f.cmd.Process.Pid); ok {
			s.ssh += st.own
		}
	}
	s.pgrelay = time.Duration(e.reapedPgrelay.Load())
	for _, p := range []*pgrelayProxy{e.proxy, e.baseProxy} {
		if p == nil {
			continue
		}
		if st, ok := readStat(p.cmd.Process.Pid); ok {
			s.pgrelay += st.own + st.reaped
		}
	}
	procs := readAllStats()
	for _, p := range procs {
		if p.ppid == os.Getpid() && p.comm == "sshd" {
			s.sshd += treeCPU(procs, p.pid)
		}
	}
	return s
}

// reportCPU reports the CPU used per operation between two samples, in
// nanoseconds: per process group and in total. ops is the number of
// operations (b.N, or for pgbench its transactions).
func reportCPU(b *testing.B, before, after cpuSample, ops float64) {
	reportCPUPer(b, before, after, ops, "op")
}

// reportCPUPer is reportCPU per unit other than the operation (such as
// "GB": units is then the number of GB moved).
func reportCPUPer(b *testing.B, before, after cpuSample, units float64, unit string) {
	if units <= 0 {
		return
	}
	client := float64(after.client-before.client) / units
	ssh := float64(after.ssh-before.ssh) / units
	pgrelay := float64(after.pgrelay-before.pgrelay) / units
	sshd := float64(after.sshd-before.sshd) / units
	b.ReportMetric(client, "cpu-client-ns/"+unit)
	b.ReportMetric(ssh, "cpu-ssh-ns/"+unit)
	b.ReportMetric(pgrelay, "cpu-pgrelay-ns/"+unit)
	b.ReportMetric(sshd, "cpu-sshd-ns/"+unit)
	b.ReportMetric(client+ssh+pgrelay+sshd, "cpu-ns/"+unit)
}

func rusageTime(r *syscall.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// procStat is what the benchmarks use of /proc/PID/stat.
type procStat struct {
	pid, ppid int
	comm      string
	own       time.Duration // utime + stime
	reaped    time.Duration // cutime + cstime: children waited for
}

// readStat parses /proc/PID/stat.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, false
	}
	return parseStat(string(b))
}

func parseStat(s string) (procStat, bool) {
	// "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
	open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || close < open {
		return procStat{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(s[:open]))
	if err != nil {
		return procStat{}, false
	}
	f := strings.Fields(s[close+1:])
	// f[0] is the state (field 3); utime..cstime are fields 14..17.
	if len(f) < 15 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, false
	}
	var ticks [4]int64
	for i := range ticks {
		if ticks[i], err = strconv.ParseInt(f[11+i], 10, 64); err != nil {
			return procStat{}, false
		}
	}
	return procStat{
		pid:    pid,
		ppid:   ppid,
		comm:   s[open+1 : close],
		own:    time.Duration(ticks[0]+ticks[1]) * clockTick,
		reaped: time.Duration(ticks[2]+ticks[3]) * clockTick,
	}, true
}

// readAllStats reads /proc/PID/stat of every process.
func readAllStats() []procStat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procStat
	for _, de := range entries {
		pid, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			out = append(out, st)
		}
	}
	return out
}

// treeCPU sums the CPU time of root and its live descendants, with what
// each reaped.
func treeCPU(procs []procStat, root int) time.Duration {
	children := map[int][]procStat{}
	var rootStat *procStat
	for i, p := range procs {
		children[p.ppid] = append(children[p.ppid], p)
		if p.pid == root {
			rootStat = &procs[i]
		}
	}
	if rootStat == nil {
		return 0
	}
	var total time.Duration
	queue := []procStat{*rootStat}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		total += p.own + p.reaped
		queue = append(queue, children[p.pid]...)
	}
	return total
}

// TestParseStat checks the /proc/PID/stat parser, including a command
// name with spaces and parentheses.
func TestParseStat(t *testing.T) {
	line := "4242 (sshd: root (x)) S 17 4242 4242 0 -1 4194560 100 0 0 0 12 3 4 5 20 0 1 0 100 0 0"
	st, ok := parseStat(line)
	if !ok {
		t.Fatal("parseStat failed")
	}
	if st.pid != 4242 || st.ppid != 17 || st.comm != "sshd: root (x)" {
		t.Errorf("pid, ppid, comm = %d, %d, %q", st.pid, st.ppid, st.comm)
	}
	if st.own != 15*clockTick || st.reaped != 9*clockTick {
		t.Errorf("own, reaped = %v, %v", st.own, st.reaped)
	}
	procs := []procStat{
		st,
		{pid: 5000, ppid: 4242, own: clockTick},
		{pid: 5001, ppid: 5000, own: clockTick, reaped: clockTick},
		{pid: 6000, ppid: 1, own: 100 * clockTick},
	}
	if got := treeCPU(procs, 4242); got != 27*clockTick {
		t.Errorf("treeCPU = %v, want %v", got, 27*clockTick)
	}
}
