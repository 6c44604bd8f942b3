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

# The concurrency packages, also run under the race detector by make test
# (only these: -race makes tests several times slower).
RACE_PKGS := ./internal/tunnel/ ./internal/proxy/ ./internal/relay/ ./internal/queue/ ./internal/jobs/ ./internal/app/

# The whole test suite against real PostgreSQL and OpenSSH servers; the
# browser tests must run their accessibility checks (PGRELAY_REQUIRE_AXE).
# Then the concurrency packages again under the race detector.
test: test-deps vet openapi-lint
	./scripts/fuzz.sh 3s
	set -o pipefail 2>/dev/null || true; \
	$(GO) build -o bin/testsummary ./internal/tools/testsummary && \
	PGRELAY_REQUIRE_AXE=1 $(GO) test -count=1 -timeout 20m -json ./... | ./bin/testsummary
	$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)

# Lints the OpenAPI document with Redocly CLI (rules in redocly.yaml): no
# error and no warning.
openapi-lint: test-deps
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true $(NODE_BIN)/redocly lint --format=stylish internal/api/openapi.json

# The suite without its slow tests (testing.Short): no browser, no
# process-level e2e and robustness suites, no release image or upgrade
# build, no 45 s credential rotation.
test-short:
	$(GO) test -count=1 -short ./...

vet:
	@test -z "$$(gofmt -l cmd internal client apiwire)" || { echo "gofmt needed:"; gofmt -l cmd internal client apiwire; exit 1; }
	$(GO) vet ./...

# Benchmarks: direct vs OpenSSH ssh -L vs pgrelay, side by side in rounds
# (scripts/bench.sh). SMOKE=1 make bench: every benchmark once, small,
# written to a temporary directory instead of docs/.
bench: test-deps
	./scripts/bench.sh

# Every fuzz target for a minute each (make test runs them for 3 s each).
fuzz:
	./scripts/fuzz.sh 60s

clean:
	rm -rf bin

# --- Release packaging (see README, "Operations") ---------------------------
# make dist: static binaries (CGO off) with the version and commit stamped,
# and their SHA-256 checksums, in $(DIST). make image: the container image
# (Containerfile) with podman or buildah.
VERSION ?= $(or $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null | sed 's/^v//'),$(shell sed -n 's/^\tVersion = "\(.*\)"$$/\1/p' internal/cli/root.go))
COMMIT ?= $(or $(shell git rev-parse HEAD 2>/dev/null),unknown)
DIST ?= dist
PLATFORMS ?= linux/amd64 linux/arm64 darwin/arm64
LDFLAGS := -s -w -X github.com/pgrelay/pgrelay/internal/cli.Version=$(VERSION) -X github.com/pgrelay/pgrelay/internal/cli.Commit=$(COMMIT)
IMAGE ?= pgrelay:$(VERSION)
IMAGE_ARCH ?= $(shell $(GO) env GOARCH)
CONTAINER_TOOL ?= $(or $(shell command -v podman 2>/dev/null),$(shell command -v buildah 2>/dev/null))
# podman's storage options, e.g. --storage-driver vfs --root DIR --runroot DIR.
CONTAINER_FLAGS ?= --storage-driver vfs
CA_CERTS ?= /etc/ssl/certs/ca-certificates.crt

.PHONY: dist image test-image

dist:
	rm -rf $(DIST)/pgrelay-* $(DIST)/SHA256SUMS && mkdir -p $(DIST)
	set -e; for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; \
		echo "build $(DIST)/pgrelay-$(VERSION)-$$os-$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS)" \
			-o $(DIST)/pgrelay-$(VERSION)-$$os-$$arch ./cmd/pgrelay; \
	done
	cd $(DIST) && sha256sum pgrelay-* > SHA256SUMS && cat SHA256SUMS

image:
	@test -n "$(CONTAINER_TOOL)" || { echo "make image needs podman or buildah: apt-get install podman"; exit 1; }
	$(MAKE) dist PLATFORMS=linux/$(IMAGE_ARCH)
	rm -rf $(DIST)/image
	mkdir -p $(DIST)/image/data $(DIST)/image/rootfs/tmp $(DIST)/image/rootfs/usr/local/bin $(DIST)/image/rootfs/etc/ssl/certs
	chmod 1777 $(DIST)/image/rootfs/tmp
	cp $(DIST)/pgrelay-$(VERSION)-linux-$(IMAGE_ARCH) $(DIST)/image/rootfs/usr/local/bin/pgrelay
	cp $(CA_CERTS) $(DIST)/image/rootfs/etc/ssl/certs/ca-certificates.crt
	echo 'pgrelay:x:65532:65532:pgrelay:/var/lib/pgrelay:/sbin/nologin' > $(DIST)/image/rootfs/etc/passwd
	echo 'pgrelay:x:65532:' > $(DIST)/image/rootfs/etc/group
	$(CONTAINER_TOOL) $(CONTAINER_FLAGS) build --format docker --platform linux/$(IMAGE_ARCH) \
		--label org.opencontainers.image.version=$(VERSION) --label org.opencontainers.image.revision=$(COMMIT) \
		-f Containerfile -t $(IMAGE) $(DIST)/image

# The release binary and container image tests alone (make test runs them
# too; the image part needs podman, which make test-deps installs).
test-image:
	$(GO) test -count=1 -run 'TestReleaseBinaries' -v ./internal/operations/
