package app

import (
	"errors"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// TunnelDroppedError is why a session (a query, a run's step, a proxied
// client) ended when the connection's tunnel dropped: the tunnel's error
// and the next step, as the connection test's hint gives it.
type TunnelDroppedError struct {
	Connection string
	// Hop is "hop 2 of 3 (bastion-b:22)" when a hop of a chain dropped,
	// "" for a single bastion.
	Hop string
	// KeepaliveInterval is how often pgrelay checked on the bastion.
	KeepaliveInterval time.Duration
	Err               *tunnel.DroppedError
}

// Error says why the tunnel dropped and what to check.
func (e *TunnelDroppedError) Error() string {
	if e.Hop != "" {
		return fmt.Sprintf("%s: %v. Next: test the connection (`pgrelay connection test %s`), which names the failing hop; if it passes "+
			"but tunnels keep dropping, check that hop's sshd ClientAliveInterval and ClientAliveCountMax (30 and 10 are recommended) "+
			"and the idle timeout of any load balancer or NAT gateway in front of it, which must be longer than pgrelay's keepalive "+
			"interval (%s)", e.Hop, e.Err, e.Connection, e.KeepaliveInterval)
	}
	return fmt.Sprintf("%v. Next: test the connection (`pgrelay connection test %s`); if it passes but tunnels keep dropping, "+
		"check the bastion's sshd ClientAliveInterval and ClientAliveCountMax (30 and 10 are recommended, in /etc/ssh/sshd_config) "+
		"and the idle timeout of any load balancer or NAT gateway in front of the bastion, which must be longer than "+
		"pgrelay's keepalive interval (%s)", e.Err, e.Connection, e.KeepaliveInterval)
}

// Unwrap returns the tunnel's error.
func (e *TunnelDroppedError) Unwrap() error { return e.Err }

// withNextStep adds the next step to the error of a tunnel that dropped;
// other errors come back as they are.
func (s *Session) withNextStep(err error) error {
	var dropped *tunnel.DroppedError
	if !errors.As(err, &dropped) {
		return err
	}
	var interval time.Duration
	if t := s.spec.Tunnel; t != nil {
		interval = t.KeepaliveInterval.Duration()
	}
	hop := ""
	var he *tunnel.HopError
	if errors.As(err, &he) {
		hop = he.Where()
	}
	return &TunnelDroppedError{Connection: s.spec.Name, Hop: hop, KeepaliveInterval: interval, Err: dropped}
}
