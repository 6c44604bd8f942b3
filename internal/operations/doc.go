// Package operations holds the process-level tests of operating pgrelay
// for years: moving the store between SQLite and PostgreSQL (`pgrelay store
// copy`), backing it up and restoring it while it serves, rotating the
// master key (also killed at every point of it), upgrading from the
// previous release (built from its git commit), and the packaging (static
// release binaries, the systemd unit, the container image, the Kubernetes
// manifests). It has no code of its own besides this comment: everything
// is in its tests, which run the built binary against a real PostgreSQL
// and a real OpenSSH bastion (package testenv).
package operations
