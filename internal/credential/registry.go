package credential

import (
	"crypto/sha256"
	"encoding/json"
	"sync"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
)

// Registry keeps one Cache per connection for a process, so that every
// user of a connection (runs, tests, relays) shares its token and its
// rate limit. A connection whose auth settings, secrets or endpoint change
// gets a new cache for its next sessions.
type Registry struct {
	opts  Options
	cache CacheConfig

	mu     sync.Mutex
	caches map[string]*registryEntry // by connection ID
}

type registryEntry struct {
	sum   [32]byte // of the auth settings, secrets and endpoint (authSum)
	cache *Cache
}

// NewRegistry returns a registry whose sources get opts and whose caches
// get cfg (Name is set per connection).
func NewRegistry(opts Options, cfg CacheConfig) *Registry {
	return &Registry{opts: opts, cache: cfg, caches: map[string]*registryEntry{}}
}

// For returns the cache of connection id, whose spec has its secrets
// opened; nil for a password connection.
func (r *Registry) For(id string, spec *connection.Spec) *Cache {
	if !spec.AuthKind().IsToken() {
		r.Forget(id)
		return nil
	}
	sum := authSum(spec)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.caches[id]; ok && e.sum == sum {
		return e.cache
	}
	// A cache replaced here is not closed: sessions opened with the old
	// settings (a proxy, a run) keep using it until they end, as they
	// keep the rest of those settings.
	cfg := r.cache
	cfg.Name = spec.Name
	c := NewCache(New(spec, r.opts), cfg)
	r.caches[id] = &registryEntry{sum: sum, cache: c}
	return c
}

// Forget drops the cache of connection id (deleted, or no longer using a
// token).
func (r *Registry) Forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.caches[id]; ok {
		e.cache.Close()
		delete(r.caches, id)
		if h := r.cache.Hooks.Expiry; h != nil {
			h(e.cache.cfg.Name, e.cache.Kind(), time.Time{})
		}
	}
}

// Statuses returns the state of every cache by connection ID, e.g. for a
// gauge of seconds until expiry.
func (r *Registry) Statuses() map[string]Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]Status, len(r.caches))
	for id, e := range r.caches {
		out[id] = e.cache.Status()
	}
	return out
}

// Close ends every cache's fetch in progress.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, e := range r.caches {
		e.cache.Close()
		delete(r.caches, id)
	}
}

// authSum is a digest of what the token depends on and where it may go:
// the auth settings, its secrets and the endpoint (server, database user,
// hops, verification), so that a token fetched for one server is never
// sent to another the connection was moved to. It stays in memory only.
func authSum(spec *connection.Spec) [32]byte {
	a := spec.Auth
	b, _ := json.Marshal(struct {
		Auth         *connection.Auth
		Endpoint     connection.Endpoint
		ClientSecret string
		Key          string
	}{a, spec.Endpoint(), a.ClientSecret.Reveal(), a.ServiceAccountKey.Reveal()})
	return sha256.Sum256(b)
}
