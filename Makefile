# pgrelay — see README.md.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin/pgrelay
# make install copies the binary to $(GOBIN) when set, else $(PREFIX)/bin.
PREFIX ?= /usr/local
BINDIR ?= $(if $(GOBIN),$(GOBIN),$(PREFIX)/bin)
# make run ARGS='--listen 127.0.0.1:9090': more flags for `pgrelay serve`.
ARGS ?=
# The Node.js tools of the tests (scripts/install-test-deps.sh).
NODE_BIN := .cache/npm/node_modules/.bin

.PHONY: all build install run test test-deps test-short vet openapi-lint bench fuzz clean

all: build

build:
	@echo "building $(BIN) from ./cmd/pgrelay ($$($(GO) env GOOS)/$$($(GO) env GOARCH), $$($(GO) env GOVERSION))"
	$(GO) build -trimpath -o $(BIN) ./cmd/pgrelay
	@echo "built $(BIN); \`make install\` copies it to $(BINDIR)"

# Installs bin/pgrelay as $(BINDIR)/pgrelay: $GOBIN when set, else
# /usr/local/bin (make install PREFIX=$HOME/.local for ~/.local/bin).
install: build
	@echo "installing $(BIN) as $(BINDIR)/pgrelay"
	install -d "$(BINDIR)"
	install -m 0755 $(BIN) "$(BINDIR)/pgrelay"

# Runs pgrelay on its embedded default: the web UI and API on
# http://127.0.0.1:8080 with SQLite in the data dir (~/.local/share/pgrelay).
# Another address: make run ARGS='--listen 127.0.0.1:9090', or PGRELAY_ADDR.
run: build
	./$(BIN) serve $(ARGS)

# Installs what the tests need (PostgreSQL server, OpenSSH server, Chromium,
# Node.js with axe-core and Redocly CLI) when missing.
test-deps:
	./scripts/install-test-deps.sh

# The whole test suite against real PostgreSQL and OpenSSH servers; the
# browser tests must run their accessibility checks (PGRELAY_REQUIRE_AXE).
test: test-deps vet openapi-lint
	./scripts/fuzz.sh 3s
	set -o pipefail 2>/dev/null || true; \
	$(GO) build -o bin/testsummary ./internal/tools/testsummary && \
	PGRELAY_REQUIRE_AXE=1 $(GO) test -count=1 -timeout 20m -json ./... | ./bin/testsummary

# Lints the OpenAPI document with Redocly CLI (rules in redocly.yaml): no
# error and no warning.
openapi-lint: test-deps
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true $(NODE_BIN)/redocly lint --format=stylish internal/api/openapi.json

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
