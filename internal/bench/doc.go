// Package bench holds pgrelay's benchmarks, measured side by side over
// several paths to PostgreSQL: a direct TCP connection, OpenSSH's `ssh -N
// -L` forward, the `pgrelay proxy` command (the real binary, built from
// cmd/pgrelay and run on a connection saved in a throwaway data dir; and,
// when PGRELAY_BENCH_PGRELAY_BASE names one, a baseline build's beside
// it), `pgrelay exec` running a client program with its per-run endpoint,
// and pgrelay's in-process tunnel (a pgx DialFunc, no local port):
//
//   - BenchmarkRoundTrip: a Go `SELECT 1` loop with pgx, every path;
//   - BenchmarkPgbench: `pgbench -S` with 1 client and with 8 clients over
//     one tunnel, every path with a local endpoint;
//   - BenchmarkThroughput: a 1 GB `COPY ... TO STDOUT` read by the client;
//   - BenchmarkTunnelSetup: from nothing to the first query result
//     (tunnel.Dial against spawning `ssh -N -L`);
//   - BenchmarkDropDetection: from freezing the path to the bastion to the
//     tunnel's error, against keepalive interval × count;
//   - BenchmarkScale: 500 tunnels held open at once, each its own SSH
//     connection (memory, idle CPU with keepalives, open time p50/p99),
//     pgrelay's held by the helper command in cmd/holdtunnels so that
//     the memory measured is pgrelay's alone;
//   - BenchmarkClients: real programs: `psql \copy ... to /dev/null` of
//     100 B, 1 kB and 1 MB rows, `pg_dump -Fc` of a pgbench database and
//     `pg_restore` of its dump, with throughput and CPU per GB;
//   - BenchmarkFar: the bastion (and, for the direct path, PostgreSQL)
//     behind a [LatencyRelay]: time to the first row with the round trips
//     it took, a dbt-like session, a 100 MB copy;
//   - BenchmarkRuns: a batch of short runs on 1, 2 and 4 `pgrelay serve`
//     processes sharing a PostgreSQL store (runs per minute, queue
//     latency, CPU per run);
//   - BenchmarkBastionLogin: what one login (handshake, authentication,
//     one channel) costs the bastion's sshd, with pgrelay's algorithms and
//     with other key exchanges and client key types;
//   - BenchmarkCipher: AES-128-GCM against ChaCha20-Poly1305 in OpenSSH's
//     ssh and in pgrelay's tunnel.
//
// The benchmarks live in the package's test files and run against a real
// throwaway PostgreSQL and a real OpenSSH bastion on loopback (see
// internal/testenv), started once per test process the first time a
// benchmark needs them and stopped by TestMain at the end. Plain `go test`
// runs no benchmark and so starts no server.
//
// Besides time (or rate), the benchmarks report the CPU time per operation
// of this process (pgx, and the in-process tunnel), of OpenSSH's ssh
// client, of the `pgrelay proxy` process and of the bastion's sshd, read
// from getrusage and /proc: on a shared machine it varies much less than
// wall time.
//
// Settings from the environment: PGRELAY_BENCH_PGBENCH (pgbench run
// length, default 5s), PGRELAY_BENCH_TUNNELS (default 500),
// PGRELAY_BENCH_OPEN_CONCURRENCY (default 8), PGRELAY_BENCH_IDLE (default
// 20s), PGRELAY_BENCH_HOLD_CPUPROFILE (a CPU profile of the process
// holding the scale benchmark's tunnels), PGRELAY_BENCH_PROXY_ENV (extra
// environment of the `pgrelay proxy` process, for experiments such as
// GOGC=100), PGRELAY_BENCH_PGRELAY (another build of the pgrelay command
// to run as the proxy, to compare builds), PGRELAY_BENCH_PGRELAY_BASE (a
// baseline build whose proxy runs beside this one's, path
// pgrelay_proxy_base; PGRELAY_BENCH_PGRELAY_BASE_NAME names it in the
// report), PGRELAY_BENCH_COPY_MB (MB per psql copy, default 256),
// PGRELAY_BENCH_DUMP_SCALE (pgbench scale of the pg_dump database,
// default 50: about 750 MB), PGRELAY_BENCH_DELAYS (one-way delays of the
// far bastion, default 5ms,25ms), PGRELAY_BENCH_FAR_REPEAT (setups per
// first-row operation, default 5), PGRELAY_BENCH_FAR_COPY_MB (default
// 100), PGRELAY_BENCH_RUNS (runs per batch, default 200),
// PGRELAY_BENCH_RUNS_DIRECT=1 (the runs' connection without the bastion)
// and PGRELAY_BENCH_CIPHER_MB (MB per cipher copy, default 500).
//
// The package's one non-test type is [LatencyRelay], the userspace delay
// the far-bastion benchmarks put in front of the bastion.
//
// Run them with scripts/bench.sh (`make bench`), which saves the raw output
// to docs/benchmarks.txt and renders docs/benchmarks.md and
// docs/benchmarks.png with the report command in internal/bench/report.
package bench
