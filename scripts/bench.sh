#!/bin/sh
# Runs pgrelay's benchmarks (internal/bench) side by side over four paths
# to a throwaway PostgreSQL through a real OpenSSH bastion on loopback:
# direct, OpenSSH's `ssh -N -L`, the `pgrelay proxy` command and pgrelay's
# in-process tunnel. Measured: round trips (Go `SELECT 1` loop, `pgbench -S
# -c 1` and `-c 8`), 1 GB COPY throughput, setup to the first query,
# drop detection with a frozen bastion path, and 500 tunnels held open
# (memory, idle CPU, open times).
#
# Saves the raw `go test -bench` output to docs/benchmarks.txt and renders
# docs/benchmarks.md (machine, targets, ratios, tables) and the chart
# docs/benchmarks.png from it with `go run ./internal/bench/report`.
# About 10 minutes on a 2-core machine.
#
# The samples are taken in ROUNDS separate runs of `go test` rather than
# one run with -count: go test repeats each benchmark in a row, so on a
# shared machine a change in background load would land on one path only
# and skew the ratios; rounds spread it over every path. The scale
# benchmark (several hundred SSH connections) runs once, after the rounds.
#
# Environment: ROUNDS (default 5), BENCHTIME (default 3s), BENCH (the
# benchmarks of each round, default every one but Scale), SCALE (0 skips
# the scale run), and the benchmarks' own PGRELAY_BENCH_* settings (see
# internal/bench).
set -eu

PATH="$PATH:/usr/local/go/bin"
export PATH
cd "$(dirname "$0")/.."

bench="${BENCH:-RoundTrip|Pgbench|Throughput|TunnelSetup|DropDetection}"
benchtime="${BENCHTIME:-3s}"
rounds="${ROUNDS:-5}"
scale="${SCALE:-1}"
raw=docs/benchmarks.txt
report=docs/benchmarks.md
chart=docs/benchmarks.png

mkdir -p docs
tmp="$(mktemp "${TMPDIR:-/tmp}/pgrelay-bench.XXXXXX")"
status="$tmp.status"
trap 'rm -f "$tmp" "$status"' EXIT INT TERM

# Build once, so that the rounds measure the same binary.
go test -run '^$' -bench '^$' -count 1 ./internal/bench/ >/dev/null

# run PATTERN BENCHTIME: one `go test` run, its output appended to $tmp.
run() {
	# POSIX sh has no pipefail: carry go test's exit status past tee in a file.
	{
		rc=0
		go test -run '^$' -bench "$1" -benchtime "$2" -count 1 -timeout 30m ./internal/bench/ 2>&1 || rc=$?
		echo "$rc" >"$status"
	} | tee -a "$tmp"
	rc="$(cat "$status")"
	if [ "$rc" -ne 0 ]; then
		echo "bench.sh: go test failed (exit $rc); $raw and $report left unchanged" >&2
		exit "$rc"
	fi
}

cmd="$rounds rounds of: go test -run '^\$' -bench '$bench' -benchtime $benchtime ./internal/bench/"
if [ "$scale" != 0 ]; then
	cmd="$cmd; then once: go test -run '^\$' -bench 'Scale' -benchtime 1x ./internal/bench/"
fi
echo "bench.sh: $cmd"
round=1
while [ "$round" -le "$rounds" ]; do
	echo "bench.sh: round $round of $rounds" >&2
	run "$bench" "$benchtime"
	round=$((round + 1))
done
if [ "$scale" != 0 ]; then
	echo "bench.sh: scale" >&2
	run 'Scale' 1x
fi

cp "$tmp" "$raw"
go run ./internal/bench/report -in "$raw" -out "$report" -png "$chart" -command "$cmd"
echo "bench.sh: wrote $raw, $report and $chart"
