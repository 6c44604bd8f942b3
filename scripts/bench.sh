#!/bin/sh
# Runs pgrelay's benchmarks (internal/bench) side by side over several
# paths to a throwaway PostgreSQL through a real OpenSSH bastion on
# loopback: direct, OpenSSH's `ssh -N -L`, the `pgrelay proxy` command
# (this build's and the previous release's), pgrelay's in-process tunnel
# and `pgrelay exec`. Measured:
#
#   - round trips (Go `SELECT 1` loop, `pgbench -S -c 1` and `-c 8`),
#     1 GB COPY throughput, setup to the first query, drop detection with
#     a frozen bastion path, and 500 tunnels held open (memory, idle CPU,
#     open times);
#   - real clients: `psql \copy` of 100 B, 1 kB and 1 MB rows, `pg_dump
#     -Fc` and `pg_restore` of a pgbench database (scale 50 by default);
#   - a bastion far away (a userspace latency relay, 5 and 25 ms one way):
#     time to the first row, a dbt-like session, a 100 MB copy;
#   - runs across 1, 2 and 4 `pgrelay serve` processes on one PostgreSQL
#     store; AES-128-GCM against ChaCha20-Poly1305 for both SSH clients.
#
# Saves the raw `go test -bench` output to $OUT/benchmarks.txt and renders
# $OUT/benchmarks.md (machine, targets, ratios with their spread over the
# rounds, tables) and the chart $OUT/benchmarks.png from it with
# `go run ./internal/bench/report`. OUT is docs unless SMOKE=1.
# About 8 minutes per round on a 2-core machine (45 minutes in all with
# the defaults), plus a few for the scale run.
#
# The samples are taken in ROUNDS separate runs of `go test` rather than
# one run with -count: go test repeats each benchmark in a row, so on a
# shared machine a change in background load would land on one path only
# and skew the ratios; rounds spread it over every path, and the report
# states the range of each ratio over them. Each round runs the quick
# benchmarks (BENCH) for BENCHTIME each, then the long ones (HEAVY) once
# each. The scale benchmark (several hundred SSH connections) runs once,
# after the rounds.
#
# Environment: ROUNDS (default 5), BENCHTIME (default 3s), BENCH (the
# quick benchmarks of each round, default every one but Scale), HEAVY (the
# long ones, default Clients|Far|Cipher|Runs; empty skips them), SCALE
# (0 skips the scale run), BASELINE (the git revision whose `pgrelay
# proxy` is measured beside this build's, default v0.1.0; empty skips
# it), SMOKE=1 (a quick check that everything runs: one round, small
# sizes, written to a temporary directory, never to docs/), OUT (where
# the raw output, report and chart go), and the benchmarks' own
# PGRELAY_BENCH_* settings (see internal/bench, such as
# PGRELAY_BENCH_DUMP_SCALE and PGRELAY_BENCH_COPY_MB).
set -eu

PATH="$PATH:/usr/local/go/bin"
export PATH
cd "$(dirname "$0")/.."

if [ "${SMOKE:-0}" = 1 ]; then
	# Every benchmark once, small: checks the harness, measures nothing.
	: "${ROUNDS:=1}" "${BENCHTIME:=100ms}" "${SCALE:=0}"
	: "${PGRELAY_BENCH_PGBENCH:=1s}" "${PGRELAY_BENCH_COPY_MB:=8}" "${PGRELAY_BENCH_DUMP_SCALE:=1}"
	: "${PGRELAY_BENCH_FAR_REPEAT:=1}" "${PGRELAY_BENCH_FAR_COPY_MB:=8}" "${PGRELAY_BENCH_RUNS:=16}"
	: "${PGRELAY_BENCH_CIPHER_MB:=32}" "${PGRELAY_BENCH_TUNNELS:=20}" "${PGRELAY_BENCH_IDLE:=2s}"
	export PGRELAY_BENCH_PGBENCH PGRELAY_BENCH_COPY_MB PGRELAY_BENCH_DUMP_SCALE PGRELAY_BENCH_FAR_REPEAT \
		PGRELAY_BENCH_FAR_COPY_MB PGRELAY_BENCH_RUNS PGRELAY_BENCH_CIPHER_MB PGRELAY_BENCH_TUNNELS PGRELAY_BENCH_IDLE
	if [ -z "${OUT:-}" ]; then
		OUT="$(mktemp -d "${TMPDIR:-/tmp}/pgrelay-bench-smoke.XXXXXX")"
	fi
fi

bench="${BENCH:-RoundTrip|Pgbench|Throughput|TunnelSetup|DropDetection|BastionLogin}"
heavy="${HEAVY-Clients|Far|Cipher|Runs}"
benchtime="${BENCHTIME:-3s}"
rounds="${ROUNDS:-5}"
scale="${SCALE:-1}"
baseline="${BASELINE-v0.1.0}"
out="${OUT:-docs}"
raw="$out/benchmarks.txt"
report="$out/benchmarks.md"
chart="$out/benchmarks.png"

mkdir -p "$out"
tmp="$(mktemp "${TMPDIR:-/tmp}/pgrelay-bench.XXXXXX")"
status="$tmp.status"
basedir=""
cleanup() {
	rm -f "$tmp" "$status"
	if [ -n "$basedir" ]; then
		git worktree remove --force "$basedir/src" >/dev/null 2>&1 || true
		rm -rf "$basedir"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The baseline's `pgrelay proxy`, built from its revision in a worktree of
# its own (this checkout is left as it is).
if [ -n "$baseline" ]; then
	rev="$(git rev-parse --verify --quiet "$baseline^{commit}" || true)"
	if [ -z "$rev" ] && [ "$baseline" = v0.1.0 ]; then
		# A clone without tags: the commit v0.1.0 was cut from.
		rev="$(git rev-parse --verify --quiet "1fd70e5b42af9cd5ebe6c3f481db368d5151765c^{commit}" || true)"
	fi
	if [ -z "$rev" ]; then
		echo "bench.sh: BASELINE=$baseline is not a revision of this repository; set BASELINE= to skip it" >&2
		exit 2
	fi
	basedir="$(mktemp -d "${TMPDIR:-/tmp}/pgrelay-bench-base.XXXXXX")"
	echo "bench.sh: building the baseline $baseline ($(git rev-parse --short "$rev")) in $basedir" >&2
	git worktree add --detach "$basedir/src" "$rev" >/dev/null 2>&1
	(cd "$basedir/src" && go build -trimpath -o "$basedir/pgrelay" ./cmd/pgrelay)
	PGRELAY_BENCH_PGRELAY_BASE="$basedir/pgrelay"
	PGRELAY_BENCH_PGRELAY_BASE_NAME="$baseline ($(git rev-parse --short "$rev"))"
	export PGRELAY_BENCH_PGRELAY_BASE PGRELAY_BENCH_PGRELAY_BASE_NAME
fi

# Build once, so that the rounds measure the same binary.
go test -run '^$' -bench '^$' -count 1 ./internal/bench/ >/dev/null

# run PATTERN BENCHTIME: one `go test` run, its output appended to $tmp.
run() {
	# POSIX sh has no pipefail: carry go test's exit status past tee in a file.
	{
		rc=0
		go test -run '^$' -bench "$1" -benchtime "$2" -count 1 -timeout 120m ./internal/bench/ 2>&1 || rc=$?
		echo "$rc" >"$status"
	} | tee -a "$tmp"
	rc="$(cat "$status")"
	if [ "$rc" -ne 0 ]; then
		echo "bench.sh: go test failed (exit $rc); $raw and $report left unchanged" >&2
		exit "$rc"
	fi
}

cmd="$rounds rounds of: go test -run '^\$' -bench '$bench' -benchtime $benchtime ./internal/bench/"
if [ -n "$heavy" ]; then
	cmd="$cmd, then go test -run '^\$' -bench '$heavy' -benchtime 1x ./internal/bench/"
fi
if [ "$scale" != 0 ]; then
	cmd="$cmd; then once: go test -run '^\$' -bench 'Scale' -benchtime 1x ./internal/bench/"
fi
if [ -n "$baseline" ]; then
	cmd="$cmd (baseline proxy: $PGRELAY_BENCH_PGRELAY_BASE_NAME)"
fi
echo "bench.sh: $cmd"
round=1
while [ "$round" -le "$rounds" ]; do
	echo "bench.sh: round $round of $rounds" >&2
	run "$bench" "$benchtime"
	if [ -n "$heavy" ]; then
		run "$heavy" 1x
	fi
	round=$((round + 1))
done
if [ "$scale" != 0 ]; then
	echo "bench.sh: scale" >&2
	run 'Scale' 1x
fi

# The machine and its load at the end of the run, so that a report
# regenerated later (or on another computer) still describes the run.
{
	echo "bench-date: $(date -u +%Y-%m-%dT%H:%MZ)"
	echo "machine-cpu: $(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)"
	echo "machine-cores: $(grep -c '^processor' /proc/cpuinfo)"
	echo "machine-memory-kb: $(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
	echo "machine-kernel: $(uname -r)"
	echo "machine-load: $(cut -d ' ' -f 1-3 /proc/loadavg)"
} >>"$tmp"
cp "$tmp" "$raw"
go run ./internal/bench/report -in "$raw" -out "$report" -png "$chart" -command "$cmd"
echo "bench.sh: wrote $raw, $report and $chart"
