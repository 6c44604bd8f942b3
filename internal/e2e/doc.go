// Package e2e tests pgrelay as its users run it: the real binary, built once
// per test run, started as `pgrelay serve` processes with their own
// environment, driven through the Go API client, against a real PostgreSQL
// and a real OpenSSH bastion (package testenv).
//
// The tests cover what only separate processes can show: two servers
// sharing one PostgreSQL store and its queue, a server killed with SIGKILL
// in the middle of a run (resolved by another process, or by itself after a
// restart), schedules firing, a bastion frozen in the middle of a run, and
// real programs (psql, pgbench) as command steps behind the allowlist.
//
// Every process a test starts is killed when it ends, with its children;
// a failing test prints the tail of each server's log.
package e2e
