// Package testenv starts real servers on loopback for tests: a throwaway
// PostgreSQL cluster ([StartPostgres]), a real OpenSSH bastion
// ([StartBastion]) and a TCP fault proxy ([StartFaultProxy]) for network
// faults that a real server cannot be made to show. It also makes
// throwaway TLS certificates for HTTPS servers under test ([NewTLSCert])
// and reads process trees from /proc ([ReadProcessTree]), and makes
// throwaway unprivileged OS users ([NewOSUser]).
//
// A test package's tests share servers where they can: [SharedPostgres]
// is one cluster per test binary and option set, on which each test takes
// a database and role of its own ([Postgres.NewDatabase]), and
// [SharedBastion] one sshd per test binary and option set, on which each
// test authorizes keys of its own. Shared servers are stopped and removed
// by a reaper process when the test binary exits; what would disturb the
// other tests (stopping, freezing, re-keying) fails on them.
//
// Everything else a helper starts is stopped and removed in tb.Cleanup. Helpers
// report problems with tb.Fatalf (never Skip): a test that needs PostgreSQL
// or OpenSSH must fail loudly on a machine that lacks them; `make test-deps`
// installs them. The one exception is NewOSUser, which skips, saying so,
// when the tests do not run as root: only root can make accounts.
//
// The helpers work both as root (as in CI) and as a normal user. As root,
// PostgreSQL runs as the "postgres" OS user because initdb refuses to run as
// root, and sshd runs as root with privilege separation (it needs /run/sshd,
// which is created when missing).
//
// The methods of the returned values call tb.Fatalf and so must be called
// from the test's own goroutine; they are not safe for concurrent use unless
// their doc says so.
package testenv
