package app

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tracing"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// hopObserver passes one hop's measurements of a chain to the
// connection's tunnel observer: the handshakes and keepalives of every hop,
// the bytes exchanged with the first hop (all the chain's traffic) and the
// connections through the last one (those to the database).
type hopObserver struct {
	tunnel.Observer
	first, last bool
}

func (o hopObserver) ChannelOpened() {
	if o.last {
		o.Observer.ChannelOpened()
	}
}

func (o hopObserver) ChannelClosed() {
	if o.last {
		o.Observer.ChannelClosed()
	}
}

func (o hopObserver) BytesRead(n int) {
	if o.first {
		o.Observer.BytesRead(n)
	}
}

func (o hopObserver) BytesWritten(n int) {
	if o.first {
		o.Observer.BytesWritten(n)
	}
}

// hopObserverFor returns the observer of hop i of n of the named
// connection's chain, or nil without metrics.
func (s *Connector) hopObserverFor(name string, i, n int) tunnel.Observer {
	o := s.tunnelObserver(name)
	if o == nil {
		return nil
	}
	return hopObserver{Observer: o, first: i == 0, last: i == n-1}
}

// hopTimes records when each hop of a chain open started to dial.
type hopTimes struct {
	mu     sync.Mutex
	starts []time.Time
}

func newHopTimes(n int) *hopTimes { return &hopTimes{starts: make([]time.Time, n)} }

func (h *hopTimes) started(i int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i < len(h.starts) {
		h.starts[i] = time.Now()
	}
}

// traceHops records an ssh.dial span per hop dialled by a chain open, child
// of ctx's span, from the hop's dial to the next hop's (or the end of the
// open), with the hop's address, user and host key and the connection's key
// fingerprint; the failing hop's span is failed with the step.
func (s *Connector) traceHops(ctx context.Context, c *store.Connection, hops []connection.Hop, times *hopTimes,
	chain *tunnel.Chain, err error) {
	end := time.Now()
	failed := -1
	if err != nil {
		failed = 0
		var he *tunnel.HopError
		if errors.As(err, &he) {
			failed = he.Hop - 1
		}
	}
	fp := connUse(c).KeyFingerprint
	times.mu.Lock()
	starts := append([]time.Time(nil), times.starts...)
	times.mu.Unlock()
	for i, h := range hops {
		if failed >= 0 && i > failed {
			break
		}
		start := starts[i]
		if start.IsZero() {
			if i != failed {
				continue
			}
			start = end
		}
		stop := end
		if i+1 < len(starts) && !starts[i+1].IsZero() {
			stop = starts[i+1]
		}
		attrs := append(hopAttrs(i+1, h.Host, h.Port, h.User),
			tracing.Connection.String(c.Spec.Name), tracing.KeyFingerprint.String(fp))
		if chain != nil && i < chain.Len() {
			if hk := chain.Hop(i).HostKey(); hk != nil {
				attrs = append(attrs, tracing.HostKey.String(sshkey.Fingerprint(hk)))
			}
		}
		_, span := s.tracer.Start(ctx, "ssh.dial", trace.WithTimestamp(start), trace.WithAttributes(attrs...))
		if i == failed {
			tracing.Fail(span, openStep(err))
		}
		span.End(trace.WithTimestamp(stop))
	}
}
