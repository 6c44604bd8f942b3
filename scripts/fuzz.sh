#!/bin/sh
# Runs every Go fuzz target of the module for a while each (default 3s):
#   scripts/fuzz.sh 3s      (make test)
#   scripts/fuzz.sh 60s     (make fuzz)
# A failing input is saved under the package's testdata/fuzz and fails the run.
set -eu
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
time="${1:-3s}"
found=0
for pkg in $(go list ./...); do
    dir=$(go list -f '{{.Dir}}' "$pkg")
    targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' || true)
    for t in $targets; do
        found=$((found + 1))
        echo "fuzz: $pkg $t ($time)"
        go test -run '^$' -fuzz "^$t\$" -fuzztime "$time" "$pkg" >/tmp/pgrelay-fuzz.$$ 2>&1 || {
            cat /tmp/pgrelay-fuzz.$$
            rm -f /tmp/pgrelay-fuzz.$$
            exit 1
        }
    done
done
rm -f /tmp/pgrelay-fuzz.$$
echo "fuzz: $found targets passed"
