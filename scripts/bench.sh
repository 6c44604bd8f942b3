#!/bin/sh
# Runs pgrelay's benchmarks (internal/bench): PostgreSQL round trips, tunnel
# setup and COPY throughput over a direct connection, OpenSSH's `ssh -N -L`,
# pgrelay's proxy and pgrelay's in-process tunnel, side by side against a
# throwaway PostgreSQL and a real OpenSSH bastion on loopback.
#
# Saves the raw `go test -bench` output to docs/benchmarks.txt and renders
# docs/benchmarks.md (machine, medians, ratios, targets) from it with
# `go run ./internal/bench/report`. About 5 minutes on a 2-core machine.
#
# The samples are taken in ROUNDS separate runs of `go test -count COUNT`
# rather than one run of `-count 5`: go test repeats each benchmark COUNT
# times in a row, so on a shared machine a change in background load lands
# on one path only and skews the ratios; rounds spread it over every path.
# ROUNDS=1 COUNT=5 gives the single `-count 5` run.
#
# Environment: ROUNDS (default 5), COUNT (default 1), BENCHTIME (default 3s)
# and BENCH (default .: every benchmark).
set -eu

PATH="$PATH:/usr/local/go/bin"
export PATH
cd "$(dirname "$0")/.."

bench="${BENCH:-.}"
benchtime="${BENCHTIME:-3s}"
count="${COUNT:-1}"
rounds="${ROUNDS:-5}"
raw=docs/benchmarks.txt
report=docs/benchmarks.md

mkdir -p docs
tmp="$(mktemp "${TMPDIR:-/tmp}/pgrelay-bench.XXXXXX")"
status="$tmp.status"
trap 'rm -f "$tmp" "$status"' EXIT INT TERM

# Build once, so that the rounds measure the same binary.
go test -run '^$' -bench '^$' -count 1 ./internal/bench/ >/dev/null

cmd="go test -run '^\$' -bench '$bench' -benchtime $benchtime -count $count ./internal/bench/"
if [ "$rounds" -gt 1 ]; then
	cmd="$rounds rounds of: $cmd"
fi
echo "bench.sh: $cmd"
round=1
while [ "$round" -le "$rounds" ]; do
	echo "bench.sh: round $round of $rounds" >&2
	# POSIX sh has no pipefail: carry go test's exit status past tee in a file.
	{
		rc=0
		go test -run '^$' -bench "$bench" -benchtime "$benchtime" -count "$count" -timeout 30m ./internal/bench/ 2>&1 || rc=$?
		echo "$rc" >"$status"
	} | tee -a "$tmp"
	rc="$(cat "$status")"
	if [ "$rc" -ne 0 ]; then
		echo "bench.sh: go test failed (exit $rc); $raw and $report left unchanged" >&2
		exit "$rc"
	fi
	round=$((round + 1))
done

cp "$tmp" "$raw"
go run ./internal/bench/report -in "$raw" -out "$report" -command "$cmd"
echo "bench.sh: wrote $raw and $report"
