package jobs

import (
	"context"
	"net"
	"time"

	"github.com/pgrelay/pgrelay/internal/pg"
)

// stopPooled stops the backends of a run on a connection behind a
// connection pooler. The process IDs the run recorded are the pooler's
// (PgBouncer makes up the keys it hands clients), not the server's, so
// pg_stat_activity cannot be asked about them and pg_terminate_backend
// must never be given them: a cancel request is sent for each through the
// pooler, which passes it on to the server connection the client holds,
// and the clients are closed.
func (s *Stopper) stopPooled(ctx context.Context, backends []Backend, closeClients func()) Cleanup {
	spec := s.Conn.Spec()
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return s.Conn.DialDatabase(ctx) }
	c := Cleanup{Status: CleanupDone, UpdatedAt: time.Now().UTC()}
	for _, b := range backends {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := pg.Cancel(cctx, spec, dial, b.PID, b.SecretKey)
		cancel()
		if err == nil {
			c.Cancelled = append(c.Cancelled, b.PID)
		} else {
			c.Remaining = append(c.Remaining, b.PID)
		}
	}
	if closeClients != nil {
		closeClients()
	}
	if len(c.Remaining) > 0 {
		c.Status = CleanupFailed
	}
	s.count(OutcomeCancelled, len(c.Cancelled))
	s.count(OutcomeFailed, len(c.Remaining))
	c.Summarize()
	c.Message += " (behind a connection pooler: cancel requests were sent through it, and the pooler's session IDs cannot be looked up on the server)"
	return c
}
