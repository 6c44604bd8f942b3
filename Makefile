# pgrelay — see README.md.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin/pgrelay

.PHONY: all build run test test-deps test-short vet bench fuzz clean

all: build

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/pgrelay

# Runs pgrelay on its embedded default: the web UI and API on
# http://127.0.0.1:8080 with SQLite in the data dir (~/.local/share/pgrelay).
run: build
	./$(BIN) serve

# Installs what the tests need (PostgreSQL server, OpenSSH server, Chromium) when missing.
test-deps:
	./scripts/install-test-deps.sh

# The whole test suite against real PostgreSQL and OpenSSH servers.
test: test-deps vet
	./scripts/fuzz.sh 3s
	set -o pipefail 2>/dev/null || true; \
	$(GO) build -o bin/testsummary ./internal/tools/testsummary && \
	$(GO) test -count=1 -timeout 20m -json ./... | ./bin/testsummary

test-short:
	$(GO) test -count=1 -short ./...

vet:
	@test -z "$$(gofmt -l cmd internal client)" || { echo "gofmt needed:"; gofmt -l cmd internal client; exit 1; }
	$(GO) vet ./...

# Benchmarks: direct vs OpenSSH ssh -L vs pgrelay, side by side in one run.
bench: test-deps
	./scripts/bench.sh

# Every fuzz target for a minute each (make test runs them for 3 s each).
fuzz:
	./scripts/fuzz.sh 60s

clean:
	rm -rf bin
