// Command holdtunnels is a helper of pgrelay's benchmarks (internal/bench):
// it opens many pgrelay tunnels to one bastion, each its own SSH
// connection with keepalives, and holds them, so that the benchmark can
// measure what holding them costs pgrelay alone: this process's resident
// memory and CPU time, apart from the benchmark's own.
//
// It opens -n tunnels, -concurrency at a time, and prints one JSON line
// with each tunnel's open time. Then it answers each "stats" line on
// standard input with a JSON line of its Go memory figures and the
// number of tunnels still up, and at the end of standard input closes
// the tunnels and exits. It is not part of the pgrelay command.
//
// Usage:
//
//	holdtunnels -addr 127.0.0.1:2222 -user bench -key id_ed25519 -host-key host.pub -n 500
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// opened is the line printed once every tunnel has been tried.
type opened struct {
	Event       string  `json:"event"` // "opened"
	Tunnels     int     `json:"tunnels"`
	Failed      int     `json:"failed"`
	Error       string  `json:"error,omitempty"` // the first failure
	Concurrency int     `json:"concurrency"`
	OpenNanos   []int64 `json:"open_ns"` // per opened tunnel, in the order they finished
	// BaselineRSSKiB is the resident memory before the first tunnel.
	BaselineRSSKiB int64 `json:"baseline_rss_kib"`
	WallNanos      int64 `json:"wall_ns"` // opening all of them
}

// stats is the answer to a "stats" line.
type stats struct {
	Event string `json:"event"` // "stats"
	Up    int    `json:"up"`    // tunnels not dropped
	// RecentReply counts tunnels whose last keepalive reply is at most
	// three intervals old.
	RecentReply int   `json:"recent_reply"`
	RSSKiB      int64 `json:"rss_kib"`
	// Go runtime figures (runtime/metrics), in bytes.
	HeapLive   uint64 `json:"heap_live"`   // /memory/classes/heap/objects:bytes (live and not yet swept)
	HeapStacks uint64 `json:"heap_stacks"` // /memory/classes/heap/stacks:bytes
	GoTotal    uint64 `json:"go_total"`    // /memory/classes/total:bytes
	Goroutines uint64 `json:"goroutines"`
}

func main() {
	addr := flag.String("addr", "", "bastion host:port")
	user := flag.String("user", "", "bastion user")
	keyFile := flag.String("key", "", "file of the client's private key (OpenSSH PEM)")
	hostKeyFile := flag.String("host-key", "", "file of the bastion's public host key (authorized_keys format)")
	n := flag.Int("n", 500, "tunnels to open")
	concurrency := flag.Int("concurrency", 8, "tunnels opened at the same time")
	interval := flag.Duration("keepalive", time.Second, "keepalive interval")
	count := flag.Int("keepalive-count", 3, "keepalive count")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the time the tunnels are held (after opening) to this file")
	flag.Parse()
	if err := run(*addr, *user, *keyFile, *hostKeyFile, *n, *concurrency, *interval, *count, *cpuProfile); err != nil {
		fmt.Fprintf(os.Stderr, "holdtunnels: %v\n", err)
		os.Exit(1)
	}
}

func run(addr, user, keyFile, hostKeyFile string, n, concurrency int, interval time.Duration, count int, cpuProfile string) error {
	pem, err := os.ReadFile(keyFile)
	if err != nil {
		return fmt.Errorf("read client key: %w", err)
	}
	signer, err := sshkey.Signer(pem)
	if err != nil {
		return fmt.Errorf("client key: %w", err)
	}
	hostLine, err := os.ReadFile(hostKeyFile)
	if err != nil {
		return fmt.Errorf("read host key: %w", err)
	}
	hostKey, err := sshkey.ParsePublic(strings.TrimSpace(string(hostLine)))
	if err != nil {
		return fmt.Errorf("host key: %w", err)
	}
	cfg := tunnel.Config{
		Addr:              addr,
		User:              user,
		Signer:            signer,
		HostKeys:          []ssh.PublicKey{hostKey},
		KeepaliveInterval: interval,
		KeepaliveCountMax: count,
	}

	out := json.NewEncoder(os.Stdout)
	res := opened{Event: "opened", Concurrency: concurrency, BaselineRSSKiB: rssKiB()}
	tunnels := make([]*tunnel.Tunnel, 0, n)
	var mu sync.Mutex
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			t0 := time.Now()
			t, err := tunnel.Dial(ctx, cfg)
			took := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Failed++
				if res.Error == "" {
					res.Error = err.Error()
				}
				return
			}
			tunnels = append(tunnels, t)
			res.OpenNanos = append(res.OpenNanos, took.Nanoseconds())
		})
	}
	wg.Wait()
	res.WallNanos = time.Since(start).Nanoseconds()
	res.Tunnels = len(tunnels)
	if err := out.Encode(res); err != nil {
		return err
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if strings.TrimSpace(in.Text()) != "stats" {
			continue
		}
		if err := out.Encode(collect(tunnels, interval)); err != nil {
			return err
		}
	}
	var cw sync.WaitGroup
	for _, t := range tunnels {
		cw.Go(func() { _ = t.Close() })
	}
	cw.Wait()
	return out.Encode(map[string]string{"event": "closed"})
}

// collect gathers the stats.
func collect(tunnels []*tunnel.Tunnel, interval time.Duration) stats {
	s := stats{Event: "stats", RSSKiB: rssKiB()}
	for _, t := range tunnels {
		if t.Err() != nil {
			continue
		}
		s.Up++
		if last := t.Stats().LastKeepaliveReply; !last.IsZero() && time.Since(last) <= 3*interval {
			s.RecentReply++
		}
	}
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/sched/goroutines:goroutines"},
	}
	metrics.Read(samples)
	value := func(i int) uint64 {
		if samples[i].Value.Kind() == metrics.KindUint64 {
			return samples[i].Value.Uint64()
		}
		return 0
	}
	s.HeapLive, s.HeapStacks, s.GoTotal, s.Goroutines = value(0), value(1), value(2), value(3)
	if s.Goroutines == 0 {
		s.Goroutines = uint64(runtime.NumGoroutine())
	}
	return s
}

// rssKiB is this process's resident set size (VmRSS), or 0.
func rssKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}
