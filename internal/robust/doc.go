// Package robust is pgrelay's robustness suite: process-level tests that
// start the real binary as `pgrelay serve` (package e2etest) against a real
// PostgreSQL and a real OpenSSH bastion (package testenv), break something
// underneath a running job, and check what users would check.
//
// The fault tests (TestFaults) kill the bastion's sshd mid-run, freeze it,
// restart the database mid-run, terminate the run's backend, SIGKILL the
// server mid-run and restart it, and fill the disk under the embedded
// store. Each asserts that
//
//   - the run or request ends with a reason that names the cause,
//   - nothing saved earlier is lost (connections, jobs, earlier runs and
//     their logs read back unchanged),
//   - the server keeps serving (/readyz, reads, and a new run on a healthy
//     direct connection succeeds), and
//   - the server leaks no goroutine, file descriptor or SSH tunnel: the
//     counts on its /metrics after the fault are back at the baseline taken
//     before it, within a small tolerance (see goroutineTolerance); each
//     fault is repeated a few times so that a small leak per fault adds up
//     beyond it. A failed check lists the open files that differ (from
//     /proc) and every goroutine (SIGQUIT).
//
// The load test (TestLoad) runs 100 concurrent API clients against one
// server for a bounded time while 20 runs execute at once, directly and
// through a bastion; it asserts that every request and run succeeded and
// nothing leaked, and logs API latency percentiles (never asserted: timing
// on a shared 2-core machine is not a test).
//
// The soak test (TestSoakMix) works a mix of runs through a bastion that
// succeed, fail, time out, are cancelled mid-statement or leave a daemon,
// with connection tests, queries and run event streams abandoned midway,
// and checks that the server's goroutines, descriptors, tunnels and child
// processes, the role's database sessions and the bastion's SSH sessions
// all return to where they were.
//
// Everything runs on loopback and stops by itself; the package needs root
// only for the disk-full test's tmpfs mount (skipped otherwise). The fault
// subtests mostly wait, so without -parallel they run six at a time.
package robust
