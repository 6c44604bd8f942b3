package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

const sample = `postgresql: 15.18 (Debian 15.18-0+deb12u1)
openssh: OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026
goos: linux
goarch: amd64
pkg: github.com/pgrelay/pgrelay/internal/bench
cpu: AMD EPYC
BenchmarkRoundTrip/direct-2         	    5492	     40000 ns/op	        40.00 µs/op
BenchmarkRoundTrip/direct-2         	    5492	     30000 ns/op	        30.00 µs/op
BenchmarkRoundTrip/direct-2         	    5492	     50000 ns/op	        50.00 µs/op
BenchmarkRoundTrip/openssh-2        	    1545	    200000 ns/op	  50000 cpu-client-ns/op	 160000 cpu-ns/op	 60000 cpu-ssh-ns/op	 50000 cpu-sshd-ns/op	       200.0 µs/op
BenchmarkRoundTrip/openssh-2        	    1545	    220000 ns/op	  50000 cpu-client-ns/op	 160000 cpu-ns/op	 60000 cpu-ssh-ns/op	 50000 cpu-sshd-ns/op	       220.0 µs/op
BenchmarkRoundTrip/pgrelay_proxy-2  	    1087	    200000 ns/op	       200.0 µs/op
BenchmarkRoundTrip/pgrelay_inprocess-2         	    1256	    150000 ns/op	  60000 cpu-client-ns/op	 100000 cpu-ns/op	 0 cpu-ssh-ns/op	 40000 cpu-sshd-ns/op	       150.0 µs/op
BenchmarkTunnelSetup/openssh-2                 	       1	 250000000 ns/op	       250.0 ms/op
BenchmarkTunnelSetup/pgrelay-2                 	       3	 110000000 ns/op	        110.0 ms/op
BenchmarkThroughput/openssh-2                  	       1	 363643653 ns/op	 200.00 MB/s
BenchmarkThroughput/pgrelay_proxy-2            	       1	 336079672 ns/op	 210.00 MB/s
BenchmarkThroughput/pgrelay_inprocess-2        	       1	 287563590 ns/op	 230.00 MB/s
PASS
ok  	github.com/pgrelay/pgrelay/internal/bench	5.838s
`

func TestParse(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.config["cpu"]; got != "AMD EPYC" {
		t.Errorf("cpu = %q", got)
	}
	if got := res.config["postgresql"]; !strings.HasPrefix(got, "15.18") {
		t.Errorf("postgresql = %q", got)
	}
	if got := res.get("RoundTrip", "direct", "ns/op"); len(got) != 3 || got[1] != 30000 {
		t.Errorf("RoundTrip/direct ns/op = %v", got)
	}
	if got := res.get("RoundTrip", "direct", "µs/op"); len(got) != 3 {
		t.Errorf("RoundTrip/direct µs/op = %v", got)
	}
	if got := res.get("Throughput", "pgrelay_proxy", "MB/s"); len(got) != 1 || got[0] != 210 {
		t.Errorf("Throughput/pgrelay_proxy MB/s = %v", got)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.xs); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

func TestEvaluate(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"In-process round trip ≤ 0.8 × OpenSSH": true,  // 150/210
		"Proxy round trip ≤ OpenSSH":            true,  // 200/210
		"Proxy throughput ≥ 1.1 × OpenSSH":      false, // 210/200
		"In-process throughput ≥ 1.1 × OpenSSH": true,  // 230/200
		"Tunnel setup ≤ 0.4 × spawning ssh":     false, // 110/250
	}
	for _, v := range evaluate(res) {
		if !v.Measured {
			t.Errorf("%s: not measured", v.About)
			continue
		}
		if v.Met != want[v.About] {
			t.Errorf("%s: met = %v (ratio %.3f), want %v", v.About, v.Met, v.Ratio, want[v.About])
		}
	}
}

func TestRender(t *testing.T) {
	res, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	render(&buf, res, machine{CPU: "Test CPU", Cores: 2, Memory: "1.0 GiB", Kernel: "Linux 6.1"},
		reportMeta{Date: time.Date(2025, 1, 2, 3, 4, 0, 0, time.UTC), RawFile: "docs/benchmarks.txt", Go: "go1.26"})
	out := buf.String()
	for _, want := range []string{
		"| CPU | Test CPU |",
		"| PostgreSQL | 15.18 (Debian 15.18-0+deb12u1) |",
		"2025-01-02 03:04 UTC",
		// direct: median of 30, 40, 50 µs; 40/210 against OpenSSH.
		"| direct | 40.0 | 30.0–50.0 | 3 | 0.19× | 1.00× |",
		"| Tunnel setup ≤ 0.4 × spawning ssh | 0.44 × OpenSSH | **not met** |",
		"| direct | — | — | 0 | — | — | — | — |",
		"| pgrelay_inprocess | 150.0 | 150.0–150.0 | 1 | 0.71× | 3.75× | 100.0 (60.0 / 0.0 / 40.0) | 0.62× |",
		"| In-process round trip ≤ 0.8 × OpenSSH | 0.71 × OpenSSH | met | 0.62 × OpenSSH |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
