#!/bin/sh
# Installs what pgrelay's tests need when it is missing: a PostgreSQL server
# (initdb, pg_ctl), PgBouncer, an OpenSSH server (sshd) and client (ssh, for the
# benchmarks against `ssh -L`), socat (an SSH hop over a proxy command),
# Chromium (/usr/bin/chromium, for the web UI's browser tests), podman (the container image's test), systemd-analyze
# (the unit's check) and Node.js with npm; then, with npm, the pinned
# Node.js tools of the tests into .cache/npm of the repository (or
# $PGRELAY_NODE_DIR): axe-core, the accessibility checks the browser tests
# run in every page, and @redocly/cli, the OpenAPI lint of `make test`.
# Uses apt-get as root, or through sudo.
set -eu

# Pinned versions. @redocly/cli 1.34 runs on Debian 12's Node.js 18;
# 2.x needs Node.js 20.19 or later.
AXE_CORE_VERSION=4.14.1
REDOCLY_CLI_VERSION=1.34.20

missing=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v pgbench >/dev/null 2>&1 || [ -x "$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -n1)/pgbench" ] || missing="$missing postgresql-contrib"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
# pgbouncer: the transaction-mode pooler of the pooler tests.
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing="$missing pgbouncer"
command -v ssh >/dev/null 2>&1 || missing="$missing openssh-client"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
# podman builds the container image (make image) for its test;
# systemd-analyze checks the systemd unit.
command -v podman >/dev/null 2>&1 || command -v buildah >/dev/null 2>&1 || missing="$missing podman"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
# socat carries an SSH hop over a command's stdio (--ssh-proxy-command) in
# the tests of chains of hops.
command -v socat >/dev/null 2>&1 || missing="$missing socat"

if [ -n "$missing" ]; then
    echo "install-test-deps: installing:$missing"
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo"
    else
        echo "install-test-deps: missing:$missing" >&2
        echo "install-test-deps: run as root, or install them yourself: sudo apt-get install -y$missing" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

# The Node.js tools, unless the pinned versions are there already.
root=$(cd "$(dirname "$0")/.." && pwd)
node_dir=${PGRELAY_NODE_DIR:-$root/.cache/npm}
installed() { # installed PACKAGE VERSION
    node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' \
        "$node_dir/node_modules/$1/package.json" "$2" 2>/dev/null
}
if installed axe-core "$AXE_CORE_VERSION" && installed @redocly/cli "$REDOCLY_CLI_VERSION"; then
    exit 0
fi
echo "install-test-deps: installing axe-core@$AXE_CORE_VERSION and @redocly/cli@$REDOCLY_CLI_VERSION into $node_dir"
mkdir -p "$node_dir"
npm install --prefix "$node_dir" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    "axe-core@$AXE_CORE_VERSION" "@redocly/cli@$REDOCLY_CLI_VERSION"
