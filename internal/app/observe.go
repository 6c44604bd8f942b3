package app

import (
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// tunnelSet holds this process's open tunnels by connection name, for the
// connections' health (open tunnels, last keepalive round trip).
type tunnelSet struct {
	mu     sync.Mutex
	byName map[string]map[*tunnel.Chain]struct{}
}

func newTunnelSet() *tunnelSet {
	return &tunnelSet{byName: map[string]map[*tunnel.Chain]struct{}{}}
}

func (ts *tunnelSet) add(name string, t *tunnel.Chain) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.byName[name] == nil {
		ts.byName[name] = map[*tunnel.Chain]struct{}{}
	}
	ts.byName[name][t] = struct{}{}
}

func (ts *tunnelSet) remove(name string, t *tunnel.Chain) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.byName[name], t)
	if len(ts.byName[name]) == 0 {
		delete(ts.byName, name)
	}
}

// TunnelState is what this process knows of a connection's open tunnels.
type TunnelState struct {
	// Open counts the tunnels open now (each run, proxy or query has its
	// own).
	Open int `json:"open"`
	// Channels counts the connections open through them.
	Channels int `json:"channels"`
	// LastKeepaliveRTTMS is the round trip of the newest keepalive
	// answered on any of them, in milliseconds (0 before one).
	LastKeepaliveRTTMS float64 `json:"last_keepalive_rtt_ms,omitempty"`
	// LastKeepaliveAt is when that keepalive was answered.
	LastKeepaliveAt *time.Time `json:"last_keepalive_at,omitempty"`
	// MissedKeepalives counts keepalive intervals that passed without a
	// reply on the tunnels open now.
	MissedKeepalives int64 `json:"missed_keepalives"`
	// OpenSince is when the oldest of them came up.
	OpenSince *time.Time `json:"open_since,omitempty"`
}

// state returns the named connection's tunnel state.
func (ts *tunnelSet) state(name string) TunnelState {
	ts.mu.Lock()
	tunnels := make([]*tunnel.Chain, 0, len(ts.byName[name]))
	for t := range ts.byName[name] {
		tunnels = append(tunnels, t)
	}
	ts.mu.Unlock()
	var st TunnelState
	for _, c := range tunnels {
		st.Open++
		st.Channels += c.Last().Stats().OpenChannels
		if since := c.Hop(0).Stats().Since.UTC(); st.OpenSince == nil || since.Before(*st.OpenSince) {
			st.OpenSince = &since
		}
		for i := range c.Len() {
			s := c.Hop(i).Stats()
			st.MissedKeepalives += s.MissedKeepalives
			if !s.LastKeepaliveReply.IsZero() && (st.LastKeepaliveAt == nil || s.LastKeepaliveReply.After(*st.LastKeepaliveAt)) {
				at := s.LastKeepaliveReply.UTC()
				st.LastKeepaliveAt = &at
				st.LastKeepaliveRTTMS = float64(s.LastKeepaliveRTT.Microseconds()) / 1000
			}
		}
	}
	return st
}

// names returns the connections with open tunnels, sorted.
func (ts *tunnelSet) names() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := make([]string, 0, len(ts.byName))
	for n := range ts.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// tunnelObserver returns the metrics observer of a new tunnel of the named
// connection, or nil without metrics.
func (s *Connector) tunnelObserver(name string) tunnel.Observer {
	if s.metrics == nil {
		return nil
	}
	return s.metrics.Tunnel(name)
}

// openStep names the step a tunnel open failed at, for metrics.
func openStep(err error) string {
	var denied *egress.DeniedError
	var dial *tunnel.DialError
	var hs *tunnel.HandshakeError
	var hk *tunnel.HostKeyMismatchError
	var au *tunnel.AuthError
	switch {
	case errors.As(err, &denied):
		return metrics.StepNetworkPolicy
	case errors.As(err, &hk):
		return metrics.StepHostKey
	case errors.As(err, &au):
		return metrics.StepAuth
	case errors.As(err, &dial):
		return metrics.StepDial
	case errors.As(err, &hs):
		return metrics.StepHandshake
	}
	return metrics.StepOther
}

// countOpen counts a tunnel open of the named connection.
func (s *Connector) countOpen(name string, err error, d time.Duration) {
	if s.metrics == nil {
		return
	}
	s.metrics.TunnelOpened(name, err == nil, openStep(err), d)
}
