package relay

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Backend is a PostgreSQL server process that a relayed session opened:
// what the server said at the end of the startup phase, and who asked.
type Backend struct {
	// PID is the server process ID (BackendKeyData), as in
	// pg_stat_activity.pid.
	PID uint32
	// SecretKey is the cancel key the server sent with the PID: 4 bytes
	// in protocol 3.0, up to 256 in 3.2. It is what a CancelRequest must
	// carry; it is never logged, printed or marshalled.
	SecretKey []byte `json:"-"`
	// User and Database are the role and database the client asked for.
	User, Database string
	// ApplicationName is the client's application_name, if it sent one.
	ApplicationName string
	// Client is the client's address.
	Client string
	// OpenedAt is when the session became ready for queries.
	OpenedAt time.Time
	// Encrypted says whether the hop to the server uses TLS.
	Encrypted bool
	// Params holds the ParameterStatus values the server sent during the
	// startup phase (server_version, TimeZone, ...).
	Params map[string]string `json:"-"`
}

// String names the backend without its secret key.
func (b Backend) String() string {
	return fmt.Sprintf("backend pid %d (user %q, database %q, client %s)", b.PID, b.User, b.Database, b.Client)
}

// GoString is String, so that %#v does not print the secret key either.
func (b Backend) GoString() string { return b.String() }

// LogValue logs the backend without its secret key.
func (b Backend) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Uint64("pid", uint64(b.PID)),
		slog.String("user", b.User),
		slog.String("database", b.Database),
		slog.String("client", b.Client),
	)
}

// key identifies a backend among those of one server: the PID alone could
// be reused by a later backend.
func (b Backend) key() string { return fmt.Sprintf("%d/%x", b.PID, b.SecretKey) }

// How says how a relayed session ended.
type How int

// Ways a session ends.
const (
	// Terminated: the client sent Terminate and closed; the server ends
	// the backend by itself.
	Terminated How = iota + 1
	// ClientLost: the client went away without Terminate (killed, or its
	// connection broke); the relay sent a CancelRequest and closed the
	// upstream.
	ClientLost
	// Closed: the relay's endpoint closed the session (it was shut down);
	// the relay sent a CancelRequest.
	Closed
	// ServerClosed: the server ended the session (the backend exited).
	ServerClosed
	// UpstreamLost: the stream to the server broke (the tunnel dropped);
	// the backend may still be running, and the relay tried to cancel it.
	UpstreamLost
)

// String returns the snake_case name used in logs.
func (h How) String() string {
	switch h {
	case Terminated:
		return "terminated"
	case ClientLost:
		return "client_lost"
	case Closed:
		return "closed"
	case ServerClosed:
		return "server_closed"
	case UpstreamLost:
		return "upstream_lost"
	}
	return fmt.Sprintf("How(%d)", int(h))
}

// End is how a relayed session ended and what the relay did about it.
type End struct {
	How How
	// Err is the error that ended the copy, if one did.
	Err error
	// CancelSent says whether the relay tried to cancel the backend's
	// statement; CancelErr is why that failed, if it did.
	CancelSent bool
	CancelErr  error
	// At is when the end was noticed.
	At time.Time
}

// Observer learns about every backend a relay opens and how its session
// ends. Calls come from the sessions' goroutines, possibly at the same
// time; an observer must not block for long.
type Observer interface {
	// BackendOpened is called when a session is ready for queries,
	// before the client is told so.
	BackendOpened(Backend)
	// BackendClosed is called once the session is over and both its
	// connections are closed.
	BackendClosed(Backend, End)
}

// Observers returns an observer that tells each of obs in turn.
func Observers(obs ...Observer) Observer { return multiObserver(obs) }

type multiObserver []Observer

func (m multiObserver) BackendOpened(b Backend) {
	for _, o := range m {
		o.BackendOpened(b)
	}
}

func (m multiObserver) BackendClosed(b Backend, e End) {
	for _, o := range m {
		o.BackendClosed(b, e)
	}
}

// Registry holds the live backends of one endpoint (it is an Observer)
// and cancels them on request.
type Registry struct {
	up Upstream

	mu   sync.Mutex
	live map[string]Backend
}

// NewRegistry returns an empty registry whose cancel requests go through
// up.
func NewRegistry(up Upstream) *Registry {
	return &Registry{up: up, live: make(map[string]Backend)}
}

// BackendOpened adds b.
func (r *Registry) BackendOpened(b Backend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live[b.key()] = b
}

// BackendClosed removes b.
func (r *Registry) BackendClosed(b Backend, _ End) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.live, b.key())
}

// Backends returns the live backends, oldest first.
func (r *Registry) Backends() []Backend {
	r.mu.Lock()
	out := make([]Backend, 0, len(r.live))
	for _, b := range r.live {
		out = append(out, b)
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Backend) int { return a.OpenedAt.Compare(b.OpenedAt) })
	return out
}

// CancelResult is what CancelAll did for one backend: Err is nil when the
// server took the CancelRequest.
type CancelResult struct {
	Backend Backend
	Err     error
}

// CancelAll sends a CancelRequest for each live backend, all at once, and
// returns what happened to each, oldest backend first. A backend that is
// idle ignores the request; the server never says whether a statement was
// cancelled.
func (r *Registry) CancelAll(ctx context.Context) []CancelResult {
	backends := r.Backends()
	out := make([]CancelResult, len(backends))
	var wg sync.WaitGroup
	for i, b := range backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = CancelResult{Backend: b, Err: Cancel(ctx, r.up, b)}
		}()
	}
	wg.Wait()
	return out
}
