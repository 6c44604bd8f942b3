// Package bench holds pgrelay's benchmarks: PostgreSQL round trips, tunnel
// setup and COPY throughput, measured side by side over a direct TCP
// connection, OpenSSH's `ssh -N -L` forward, pgrelay's local proxy and
// pgrelay's in-process tunnel (a pgx DialFunc, no local port).
//
// The benchmarks live in the package's test files and run against a real
// throwaway PostgreSQL and a real OpenSSH bastion on loopback (see
// internal/testenv), started once per test process the first time a
// benchmark needs them and stopped by TestMain at the end. Plain `go test`
// runs no benchmark and so starts no server.
//
// Besides time (and MB/s for throughput), each benchmark reports the CPU
// time per operation of this process (pgx and pgrelay), of OpenSSH's ssh
// client and of the bastion's sshd, read from getrusage and /proc: on a
// shared machine it varies much less than wall time.
//
// Run them with scripts/bench.sh (`make bench`), which saves the raw output
// to docs/benchmarks.txt and renders docs/benchmarks.md with the report
// command in internal/bench/report.
package bench
