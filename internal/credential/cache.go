package credential

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/pgrelay/pgrelay/internal/connection"
)

// Cache defaults.
const (
	// DefaultRefreshAt is the fraction of a token's lifetime after which
	// the next Token call fetches a new one.
	DefaultRefreshAt = 0.8
	// DefaultRateEvery and DefaultBurst limit fetches per connection: a
	// burst of 3, then one every 10 s (well within AlloyDB's per-minute
	// sign-in quota, since each fetch serves many logins).
	DefaultRateEvery = 10 * time.Second
	DefaultBurst     = 3
	// DefaultMaxRateWait is the longest a fetch waits for the rate limit
	// before it fails with a RateLimitedError.
	DefaultMaxRateWait = 5 * time.Second
	// DefaultRetries is how many times a transient failure is retried.
	DefaultRetries = 2
	// DefaultBackoff is the first wait before a retry; it doubles.
	DefaultBackoff = 500 * time.Millisecond
	// DefaultFetchTimeout bounds one fetch, retries included.
	DefaultFetchTimeout = time.Minute
	// DefaultLifetime is assumed for a token without an expiry.
	DefaultLifetime = 15 * time.Minute
	// DefaultRefreshWait is how long a caller waits for a refresh while
	// the cached token is still usable, before it gets that token (the
	// refresh goes on): a slow endpoint must not hold up logins.
	DefaultRefreshWait = 2 * time.Second
)

// Hooks are the metrics callbacks of a Cache; each may be nil. They are
// called synchronously and must not block.
type Hooks struct {
	// Fetch is called after each attempt to fetch a token (for
	// pgrelay_credential_fetches_total{source,outcome}).
	Fetch func(source connection.AuthKind, outcome Outcome, took time.Duration)
	// Expiry is called when the cached token changes, with its expiry
	// (for a gauge of seconds until expiry; zero time when dropped).
	Expiry func(name string, source connection.AuthKind, expiresAt time.Time)
}

// CacheConfig configures a Cache. Zero fields take the defaults.
type CacheConfig struct {
	// Name is the connection's name, for logs and metrics.
	Name string
	// RefreshAt is the fraction of the lifetime after which a new token
	// is fetched (default 0.8).
	RefreshAt float64
	// RateEvery and Burst limit fetches (defaults 10 s and 3).
	RateEvery time.Duration
	Burst     int
	// MaxRateWait is the longest a fetch waits for the rate limit.
	MaxRateWait time.Duration
	// Retries and Backoff govern retries of transient failures; Retries
	// < 0 means none.
	Retries int
	Backoff time.Duration
	// FetchTimeout bounds one fetch, retries included.
	FetchTimeout time.Duration
	// RefreshWait is how long a caller waits for a refresh while the
	// cached token is still usable (default 2 s).
	RefreshWait time.Duration
	// Now is the clock (default time.Now); it decides freshness and rate.
	Now func() time.Time
	// Hooks receive metrics.
	Hooks Hooks
	// Logger receives fetch events (default: discarded).
	Logger *slog.Logger
	// NoRefresh keeps the first token for good, expired or refused: what
	// a token given once as a static password does. For tests and
	// comparisons only.
	NoRefresh bool
}

// Cache holds one connection's current token and fetches a new one when
// RefreshAt of its lifetime has passed, one fetch at a time. It is a
// Source itself, whose Token returns the cached token while it is fresh.
type Cache struct {
	src     Source
	cfg     CacheConfig
	limiter *rate.Limiter
	group   singleflight.Group
	log     *slog.Logger
	ctx     context.Context // ends with Close; fetches run under it
	cancel  context.CancelFunc

	mu        sync.Mutex
	tok       Token
	fetchedAt time.Time
	refreshAt time.Time // when tok is due for refresh
	retryAt   time.Time // no new fetch before this after a failure, while tok is usable
	lastErr   error
	lastErrAt time.Time
	// lastFetchErr is the source's last failure since the last success
	// (never a RateLimitedError), named by the fetches the limit holds back.
	lastFetchErr error
	fetches      int
}

// NewCache returns a cache in front of src.
func NewCache(src Source, cfg CacheConfig) *Cache {
	if cfg.RefreshAt <= 0 || cfg.RefreshAt >= 1 {
		cfg.RefreshAt = DefaultRefreshAt
	}
	if cfg.RateEvery <= 0 {
		cfg.RateEvery = DefaultRateEvery
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.MaxRateWait <= 0 {
		cfg.MaxRateWait = DefaultMaxRateWait
	}
	if cfg.Retries == 0 {
		cfg.Retries = DefaultRetries
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.RefreshWait <= 0 {
		cfg.RefreshWait = DefaultRefreshWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Cache{src: src, cfg: cfg, limiter: rate.NewLimiter(rate.Every(cfg.RateEvery), cfg.Burst),
		log: cfg.Logger.With(slog.String("connection", cfg.Name), slog.String("source", string(src.Kind()))),
		ctx: ctx, cancel: cancel}
}

// Kind returns the source's kind.
func (c *Cache) Kind() connection.AuthKind { return c.src.Kind() }

// Describe returns the source's description.
func (c *Cache) Describe() string { return c.src.Describe() }

// Close ends a fetch in progress; later fetches fail at once (a cached
// token is still returned while fresh).
func (c *Cache) Close() { c.cancel() }

// usableLocked reports whether the cached token may still be used for a
// login at now: before its expiry minus a margin (a tenth of its lifetime,
// at most 10 s) that covers the time to log in with it.
func (c *Cache) usableLocked(now time.Time) bool {
	if c.tok.Value.IsZero() {
		return false
	}
	margin := min(c.tok.ExpiresAt.Sub(c.fetchedAt)/10, 10*time.Second)
	return now.Before(c.tok.ExpiresAt.Add(-margin))
}

// Token returns the cached token while it is fresh; otherwise it fetches
// a new one (joining a fetch in progress). When a refresh fails while the
// cached token is still usable, that token is returned and the refresh is
// tried again after a backoff; the failure is logged and counted. A
// refresh that takes longer than RefreshWait while the cached token is
// still usable does not hold the caller up: it gets the cached token, and
// the refresh goes on.
func (c *Cache) Token(ctx context.Context) (Token, error) {
	now := c.cfg.Now()
	c.mu.Lock()
	if c.cfg.NoRefresh && !c.tok.Value.IsZero() {
		tok := c.tok
		c.mu.Unlock()
		return tok, nil
	}
	usable := c.usableLocked(now)
	if usable && (now.Before(c.refreshAt) || now.Before(c.retryAt)) {
		tok := c.tok
		c.mu.Unlock()
		return tok, nil
	}
	c.mu.Unlock()
	ch := c.group.DoChan("fetch", func() (any, error) { return c.fetch() })
	var slow <-chan time.Time
	if usable {
		t := time.NewTimer(c.cfg.RefreshWait)
		defer t.Stop()
		slow = t.C
	}
	for {
		select {
		case r := <-ch:
			if r.Err == nil {
				return r.Val.(Token), nil
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.usableLocked(c.cfg.Now()) {
				return c.tok, nil
			}
			return Token{}, r.Err
		case <-slow:
			c.mu.Lock()
			if c.usableLocked(c.cfg.Now()) {
				tok := c.tok
				c.mu.Unlock()
				c.log.Debug("credential refresh is slow: the cached token is used meanwhile",
					slog.Time("expires_at", tok.ExpiresAt))
				return tok, nil
			}
			c.mu.Unlock()
			slow = nil // dropped meanwhile (refused): wait for the fetch
		case <-ctx.Done():
			return Token{}, fmt.Errorf("%s credential: wait for a token: %w", c.src.Kind(), context.Cause(ctx))
		}
	}
}

// Invalidate drops tok if it is the cached token (the database refused
// it), so that the next Token call fetches a new one.
func (c *Cache) Invalidate(tok Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.NoRefresh || tok.Value.IsZero() || c.tok.Value.Reveal() != tok.Value.Reveal() {
		return
	}
	c.tok, c.refreshAt, c.retryAt = Token{}, time.Time{}, time.Time{}
	c.log.Info("credential dropped: the database refused it")
	if c.cfg.Hooks.Expiry != nil {
		c.cfg.Hooks.Expiry(c.cfg.Name, c.src.Kind(), time.Time{})
	}
}

// fetch gets a new token from the source: rate-limited, transient
// failures retried with doubling backoff, bounded by FetchTimeout.
func (c *Cache) fetch() (Token, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.FetchTimeout)
	defer cancel()
	backoff := c.cfg.Backoff
	for attempt := 0; ; attempt++ {
		if err := c.wait(ctx); err != nil {
			c.failed(err)
			return Token{}, err
		}
		start := c.cfg.Now()
		tok, err := c.src.Token(ctx)
		if err == nil {
			err = c.check(tok, start)
		}
		took := c.cfg.Now().Sub(start)
		if c.cfg.Hooks.Fetch != nil {
			c.cfg.Hooks.Fetch(c.src.Kind(), OutcomeOf(err), took)
		}
		if err == nil {
			c.store(tok, start)
			c.log.Info("credential fetched", slog.Time("expires_at", tok.ExpiresAt),
				slog.Duration("lifetime", tok.ExpiresAt.Sub(start).Round(time.Second)), slog.Duration("took", took))
			return tok, nil
		}
		c.log.Warn("credential fetch failed", slog.Int("attempt", attempt+1), slog.String("error", err.Error()),
			slog.String("outcome", string(OutcomeOf(err))))
		c.mu.Lock()
		c.lastFetchErr = err
		c.mu.Unlock()
		if !Transient(err) || attempt >= c.cfg.Retries {
			c.failed(err)
			return Token{}, err
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			c.failed(err)
			return Token{}, err
		}
		backoff *= 2
	}
}

// wait takes a token of the rate limiter, waiting up to MaxRateWait.
func (c *Cache) wait(ctx context.Context) error {
	now := c.cfg.Now()
	r := c.limiter.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d == 0 {
		return nil
	}
	if d > c.cfg.MaxRateWait {
		r.CancelAt(now)
		c.mu.Lock()
		last := c.lastFetchErr
		c.mu.Unlock()
		err := &RateLimitedError{Kind: c.src.Kind(), RetryAfter: d, LastFailure: last}
		if c.cfg.Hooks.Fetch != nil {
			c.cfg.Hooks.Fetch(c.src.Kind(), OutcomeRateLimited, 0)
		}
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.CancelAt(c.cfg.Now())
		return fmt.Errorf("%s credential: wait for the rate limit: %w", c.src.Kind(), context.Cause(ctx))
	}
}

// check refuses a token that is empty or already expired.
func (c *Cache) check(tok Token, start time.Time) error {
	from := "the source " + c.src.Describe()
	switch {
	case tok.Value.IsZero():
		return &MalformedError{Kind: c.src.Kind(), From: from, Problem: "it gave an empty token"}
	case !tok.ExpiresAt.IsZero() && !tok.ExpiresAt.After(c.cfg.Now()):
		return &MalformedError{Kind: c.src.Kind(), From: from, Problem: fmt.Sprintf(
			"its token expired at %s, before it could be used (took %v): check this machine's clock",
			tok.ExpiresAt.UTC().Format(time.RFC3339), c.cfg.Now().Sub(start).Round(time.Millisecond))}
	}
	return nil
}

// store caches tok, fetched at start.
func (c *Cache) store(tok Token, start time.Time) {
	if tok.ExpiresAt.IsZero() {
		tok.ExpiresAt = start.Add(DefaultLifetime)
	}
	life := tok.ExpiresAt.Sub(start)
	c.mu.Lock()
	c.tok, c.fetchedAt = tok, start
	c.refreshAt = start.Add(time.Duration(float64(life) * c.cfg.RefreshAt))
	c.retryAt = time.Time{}
	c.lastErr, c.lastFetchErr = nil, nil
	c.fetches++
	c.mu.Unlock()
	if c.cfg.Hooks.Expiry != nil {
		c.cfg.Hooks.Expiry(c.cfg.Name, c.src.Kind(), tok.ExpiresAt)
	}
}

// failed records a failed fetch; while the cached token stays usable, the
// next refresh waits for a backoff.
func (c *Cache) failed(err error) {
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastErr, c.lastErrAt = err, now
	wait := c.cfg.Backoff
	var rl *RateLimitedError
	if errors.As(err, &rl) {
		wait = max(wait, rl.RetryAfter)
	}
	c.retryAt = now.Add(wait)
}

// Status is what a Cache knows, for `connection show` and the UI; it holds
// no secret.
type Status struct {
	// Connection is the connection's name (the cache's Name).
	Connection string `json:"-"`
	// Source describes the source.
	Source string              `json:"source"`
	Kind   connection.AuthKind `json:"kind"`
	// ExpiresAt is the cached token's expiry; zero when none is cached.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	// FetchedAt is when it was fetched.
	FetchedAt time.Time `json:"fetched_at,omitzero"`
	// RefreshAt is when the next Token call fetches a new one.
	RefreshAt time.Time `json:"refresh_at,omitzero"`
	// LastError is the last failed fetch since the last success.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Fetches counts successful fetches.
	Fetches int `json:"fetches"`
}

// Status returns the cache's state.
func (c *Cache) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{Connection: c.cfg.Name, Source: c.src.Describe(), Kind: c.src.Kind(), Fetches: c.fetches}
	if !c.tok.Value.IsZero() {
		st.ExpiresAt, st.FetchedAt, st.RefreshAt = c.tok.ExpiresAt, c.fetchedAt, c.refreshAt
	}
	if c.lastErr != nil {
		st.LastError, st.LastErrorAt = c.lastErr.Error(), c.lastErrAt
	}
	return st
}
