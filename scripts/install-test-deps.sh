#!/bin/sh
# Installs what pgrelay's tests need when it is missing: a PostgreSQL server
# (initdb, pg_ctl), an OpenSSH server (sshd) and client (ssh, for the
# benchmarks against `ssh -L`), Chromium (/usr/bin/chromium, for the web
# UI's browser tests) and podman (the container image's test). Uses apt-get
# as root, or through sudo.
set -eu

missing=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v pgbench >/dev/null 2>&1 || [ -x "$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -n1)/pgbench" ] || missing="$missing postgresql-contrib"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v ssh >/dev/null 2>&1 || missing="$missing openssh-client"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
# podman builds the container image (make image) for its test;
# systemd-analyze checks the systemd unit.
command -v podman >/dev/null 2>&1 || command -v buildah >/dev/null 2>&1 || missing="$missing podman"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"

if [ -z "$missing" ]; then
    exit 0
fi

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
