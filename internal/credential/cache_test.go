package credential_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// clock is a controllable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// scripted is a Source whose answers the test decides: tokens that live
// for life on the test clock, or the errors queued in fail.
type scripted struct {
	clock *clock
	life  time.Duration
	// gate, when set, is received from before each answer.
	gate chan struct{}

	mu    sync.Mutex
	calls int
	fail  []error
}

func (s *scripted) Kind() connection.AuthKind { return connection.AuthCommand }
func (s *scripted) Describe() string          { return "scripted test source" }

func (s *scripted) Token(ctx context.Context) (credential.Token, error) {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return credential.Token{}, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if len(s.fail) > 0 {
		err := s.fail[0]
		s.fail = s.fail[1:]
		return credential.Token{}, err
	}
	return credential.Token{Value: secret.New(fmt.Sprintf("tok-%d", s.calls)), ExpiresAt: s.clock.Now().Add(s.life)}, nil
}

func (s *scripted) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *scripted) FailNext(errs ...error) {
	s.mu.Lock()
	s.fail = append(s.fail, errs...)
	s.mu.Unlock()
}

func get(t *testing.T, c *credential.Cache) string {
	t.Helper()
	tok, err := c.Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return tok.Value.Reveal()
}

// fastCache is a cache with the test clock and no real waiting.
func fastCache(src credential.Source, clk *clock, hooks credential.Hooks) *credential.Cache {
	return credential.NewCache(src, credential.CacheConfig{Name: "wh", Now: clk.Now, RateEvery: time.Millisecond, Burst: 100,
		Backoff: time.Millisecond, Hooks: hooks})
}

func TestCacheRefreshesAt80Percent(t *testing.T) {
	t.Parallel()
	clk := newClock()
	src := &scripted{clock: clk, life: 100 * time.Second}
	var mu sync.Mutex
	var expiries []time.Time
	outcomes := map[credential.Outcome]int{}
	c := fastCache(src, clk, credential.Hooks{
		Fetch: func(source connection.AuthKind, o credential.Outcome, _ time.Duration) {
			mu.Lock()
			outcomes[o]++
			mu.Unlock()
		},
		Expiry: func(name string, source connection.AuthKind, at time.Time) {
			mu.Lock()
			expiries = append(expiries, at)
			mu.Unlock()
		},
	})
	if got := get(t, c); got != "tok-1" {
		t.Fatalf("first token %q", got)
	}
	start := clk.Now()
	// Many logins before 80 % of the lifetime: one fetch.
	for range 79 {
		clk.Advance(time.Second)
		if got := get(t, c); got != "tok-1" {
			t.Fatalf("at %v: token %q, want the cached tok-1", clk.Now().Sub(start), got)
		}
	}
	if src.Calls() != 1 {
		t.Fatalf("%d fetches before 80%% of the lifetime, want 1", src.Calls())
	}
	clk.Advance(time.Second) // 80 s of 100 s
	if got := get(t, c); got != "tok-2" {
		t.Fatalf("at 80%% of the lifetime: token %q, want a new one", got)
	}
	st := c.Status()
	if st.Fetches != 2 || !st.ExpiresAt.Equal(clk.Now().Add(100*time.Second)) || !st.RefreshAt.Equal(clk.Now().Add(80*time.Second)) ||
		st.Kind != connection.AuthCommand || st.Source != "scripted test source" {
		t.Errorf("status = %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(expiries) != 2 || !expiries[1].Equal(st.ExpiresAt) || outcomes[credential.OutcomeOK] != 2 {
		t.Errorf("hooks: expiries %v outcomes %v", expiries, outcomes)
	}
}

func TestCacheOneFetchAtATime(t *testing.T) {
	t.Parallel()
	clk := newClock()
	src := &scripted{clock: clk, life: time.Hour, gate: make(chan struct{})}
	c := fastCache(src, clk, credential.Hooks{})
	const n = 20
	var wg sync.WaitGroup
	var started atomic.Int32
	results := make(chan string, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Add(1)
			tok, err := c.Token(context.Background())
			if err != nil {
				results <- "error: " + err.Error()
				return
			}
			results <- tok.Value.Reveal()
		}()
	}
	for started.Load() < n {
		time.Sleep(time.Millisecond)
	}
	close(src.gate) // let the fetch answer
	wg.Wait()
	close(results)
	for r := range results {
		if r != "tok-1" {
			t.Errorf("a caller got %q", r)
		}
	}
	if src.Calls() != 1 {
		t.Fatalf("%d concurrent callers made %d fetches, want 1", n, src.Calls())
	}
}

func TestCacheRetriesTransientFailures(t *testing.T) {
	t.Parallel()
	clk := newClock()
	src := &scripted{clock: clk, life: time.Hour}
	var mu sync.Mutex
	var outcomes []credential.Outcome
	c := fastCache(src, clk, credential.Hooks{Fetch: func(_ connection.AuthKind, o credential.Outcome, _ time.Duration) {
		mu.Lock()
		outcomes = append(outcomes, o)
		mu.Unlock()
	}})
	down := &credential.UnreachableError{Kind: connection.AuthLakebase, URL: "https://x", Err: syscall.ECONNREFUSED}
	busy := &credential.APIError{Kind: connection.AuthLakebase, URL: "https://x", Status: 503}
	src.FailNext(down, busy)
	if got := get(t, c); got != "tok-3" || src.Calls() != 3 {
		t.Fatalf("after two transient failures: token %q after %d calls", got, src.Calls())
	}
	mu.Lock()
	if fmt.Sprint(outcomes) != "[unreachable http_error ok]" {
		t.Errorf("outcomes %v", outcomes)
	}
	mu.Unlock()

	// Three transient failures exhaust the retries (2 by default).
	c2 := fastCache(src, clk, credential.Hooks{})
	src.FailNext(down, down, down)
	_, err := c2.Token(context.Background())
	if !errors.As(err, new(*credential.UnreachableError)) {
		t.Fatalf("err = %v, want the UnreachableError", err)
	}
	// A permanent failure is not retried.
	c3 := fastCache(src, clk, credential.Hooks{})
	calls := src.Calls()
	src.FailNext(&credential.InvalidClientError{Kind: connection.AuthLakebase, URL: "https://x/oidc/v1/token", ClientID: "id"})
	_, err = c3.Token(context.Background())
	if !errors.As(err, new(*credential.InvalidClientError)) || src.Calls() != calls+1 {
		t.Fatalf("err = %v after %d calls, want InvalidClientError after 1", err, src.Calls()-calls)
	}
	if st := c3.Status(); st.LastError == "" || st.Fetches != 0 {
		t.Errorf("status after a failure = %+v", st)
	}
}

func TestCacheKeepsUsableTokenWhenRefreshFails(t *testing.T) {
	t.Parallel()
	clk := newClock()
	src := &scripted{clock: clk, life: 100 * time.Second}
	c := credential.NewCache(src, credential.CacheConfig{Now: clk.Now, RateEvery: time.Millisecond, Burst: 100,
		Backoff: time.Second, Retries: -1})
	get(t, c)
	clk.Advance(85 * time.Second)
	src.FailNext(&credential.CommandFailedError{Program: "x", ExitCode: 1})
	if got := get(t, c); got != "tok-1" {
		t.Fatalf("refresh failed while tok-1 is valid: got %q", got)
	}
	// Within the backoff: no new attempt.
	if get(t, c); src.Calls() != 2 {
		t.Fatalf("%d calls: the failed refresh was tried again within its backoff", src.Calls())
	}
	clk.Advance(2 * time.Second)
	if got := get(t, c); got != "tok-3" {
		t.Fatalf("after the backoff: %q", got)
	}
	// A token past its usable end is never returned: the error is.
	clk.Advance(95 * time.Second) // tok-3 is usable until 90 s (10 s margin)
	src.FailNext(&credential.CommandFailedError{Program: "x", ExitCode: 1})
	if _, err := c.Token(context.Background()); !errors.As(err, new(*credential.CommandFailedError)) {
		t.Fatalf("expired token and a failing source: err = %v", err)
	}
}

func TestCacheRateLimit(t *testing.T) {
	t.Parallel()
	clk := newClock()
	src := &scripted{clock: clk, life: time.Hour}
	c := credential.NewCache(src, credential.CacheConfig{Now: clk.Now, RateEvery: time.Minute, Burst: 1})
	get(t, c)
	// The database refused the token: dropped, and fetched again, but
	// not more than the limit allows.
	tok, _ := c.Token(context.Background())
	c.Invalidate(tok)
	_, err := c.Token(context.Background())
	var rl *credential.RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter < 59*time.Second || credential.OutcomeOf(err) != credential.OutcomeRateLimited {
		t.Fatalf("second fetch within a minute: err = %v", err)
	}
	if src.Calls() != 1 {
		t.Fatalf("the rate-limited fetch reached the source (%d calls)", src.Calls())
	}
	clk.Advance(time.Minute)
	if got := get(t, c); got != "tok-2" {
		t.Fatalf("after a minute: %q", got)
	}
	// Invalidating a token that is no longer the cached one changes nothing.
	c.Invalidate(tok)
	if got := get(t, c); got != "tok-2" || src.Calls() != 2 {
		t.Fatalf("stale Invalidate dropped the new token: %q after %d calls", got, src.Calls())
	}
}

func TestCacheRefusesExpiredTokens(t *testing.T) {
	t.Parallel()
	clk := newClock()
	src := &scripted{clock: clk, life: -time.Second}
	c := fastCache(src, clk, credential.Hooks{})
	_, err := c.Token(context.Background())
	var me *credential.MalformedError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "check this machine's clock") {
		t.Fatalf("err = %v, want MalformedError about the clock", err)
	}
}

func TestCacheCallerContext(t *testing.T) {
	t.Parallel()
	clk := newClock()
	src := &scripted{clock: clk, life: time.Hour, gate: make(chan struct{})}
	c := fastCache(src, clk, credential.Hooks{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the caller's deadline", err)
	}
	// The fetch itself went on and serves the next caller.
	close(src.gate)
	if got := get(t, c); got != "tok-1" || src.Calls() != 1 {
		t.Fatalf("next caller got %q after %d calls", got, src.Calls())
	}
	c.Close()
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	var dropped []string
	r := credential.NewRegistry(credential.Options{AllowCommand: allowAll}, credential.CacheConfig{
		Hooks: credential.Hooks{Expiry: func(name string, _ connection.AuthKind, at time.Time) {
			if at.IsZero() {
				dropped = append(dropped, name)
			}
		}}})
	defer r.Close()
	spec := connection.Spec{Name: "wh", User: "etl", Auth: &connection.Auth{Kind: connection.AuthCommand,
		Program: script(t, "echo tok-registry")}}
	c1 := r.For("id1", &spec)
	if c1 == nil || r.For("id1", &spec) != c1 {
		t.Fatal("the same settings got another cache")
	}
	if get(t, c1) != "tok-registry" || r.Statuses()["id1"].Fetches != 1 {
		t.Fatalf("status %+v", r.Statuses()["id1"])
	}
	spec.User = "other"
	c2 := r.For("id1", &spec)
	if c2 == c1 {
		t.Fatal("a changed user kept the cache")
	}
	// A token is for the server it was fetched for: one moved elsewhere
	// (host, port, hops, verification) fetches its own.
	for _, move := range []func(s *connection.Spec){
		func(s *connection.Spec) { s.Host = "other.internal" },
		func(s *connection.Spec) { s.Port = 6432 },
		func(s *connection.Spec) {
			s.Tunnel = &connection.Tunnel{Host: "bastion.internal", Port: 22, User: "tunnel"}
		},
		func(s *connection.Spec) { s.SSLMode = connection.SSLDisable },
	} {
		move(&spec)
		if c := r.For("id1", &spec); c == c2 {
			t.Fatalf("a connection moved to %s kept its cache", spec.Endpoint())
		} else {
			c2 = c
		}
	}
	lake := connection.Spec{Name: "lake", Auth: &connection.Auth{Kind: connection.AuthLakebase, ClientSecret: secret.New("a")}}
	c3 := r.For("id2", &lake)
	lake.Auth.ClientSecret = secret.New("b")
	if r.For("id2", &lake) == c3 {
		t.Fatal("a changed secret kept the cache")
	}
	if r.For("id1", &connection.Spec{Name: "wh"}) != nil || len(r.Statuses()) != 1 || len(dropped) != 1 || dropped[0] != "wh" {
		t.Fatalf("a password connection: statuses %v, dropped %v", r.Statuses(), dropped)
	}
}

// TestCacheRateLimitNamesLastFailure: sessions held back by the rate limit
// after a failed fetch (an endpoint answering 500) are told that failure
// and its fix. They used to get only "too many fetches" and a hint that
// blamed the connection's user, while the endpoint was down.
func TestCacheRateLimitNamesLastFailure(t *testing.T) {
	t.Parallel()
	clk := newClock()
	src := &scripted{clock: clk, life: time.Hour}
	c := credential.NewCache(src, credential.CacheConfig{Now: clk.Now, RateEvery: time.Minute, Burst: 1, Retries: -1})
	down := &credential.APIError{Kind: connection.AuthLakebase, URL: "https://ws.example.com/oidc/v1/token", Status: 500}
	src.FailNext(down)
	if _, err := c.Token(context.Background()); !errors.As(err, new(*credential.APIError)) {
		t.Fatalf("first fetch: err = %v", err)
	}
	clk.Advance(5 * time.Second) // past the backoff, within the rate limit
	for range 2 {                // the last failure stays the endpoint's, not the limit's
		_, err := c.Token(context.Background())
		var rl *credential.RateLimitedError
		if !errors.As(err, &rl) || credential.OutcomeOf(err) != credential.OutcomeRateLimited {
			t.Fatalf("fetch within the limit: err = %v", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "the last fetch failed: "+down.Error()) ||
			strings.Count(msg, "too many fetches") != 1 {
			t.Errorf("error does not name the last failure once: %s", msg)
		}
		if h := credential.Hint(err); !strings.Contains(h, down.Hint()) || strings.Contains(h, "connection's user") {
			t.Errorf("hint: %s", h)
		}
	}
	if src.Calls() != 1 {
		t.Fatalf("the rate-limited fetches reached the source (%d calls)", src.Calls())
	}
}

// TestCacheSlowRefreshKeepsUsableToken: a refresh that hangs (an endpoint
// that does not answer) does not hold up logins while the cached token is
// still usable: after a short wait they get the cached token, and the
// refresh goes on for later callers. Logins used to wait for the fetch
// (up to its timeout) in the last fifth of every token's lifetime, past
// the connect timeout of clients such as dbt (10 s).
func TestCacheSlowRefreshKeepsUsableToken(t *testing.T) {
	t.Parallel()
	clk := newClock()
	src := &scripted{clock: clk, life: 100 * time.Second}
	c := fastCache(src, clk, credential.Hooks{})
	if got := get(t, c); got != "tok-1" {
		t.Fatalf("first token %q", got)
	}
	src.mu.Lock()
	src.gate = make(chan struct{}) // the next fetch hangs until the gate opens
	src.mu.Unlock()
	clk.Advance(85 * time.Second) // due for refresh, usable until 90 s
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	tok, err := c.Token(ctx)
	if err != nil || tok.Value.Reveal() != "tok-1" {
		t.Fatalf("during a hanging refresh: %q, %v after %v, want the cached tok-1", tok.Value.Reveal(), err, time.Since(start))
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the caller waited %v for the refresh", d)
	}
	close(src.gate)
	waitUntil(t, func() bool { return c.Status().Fetches == 2 })
	if got := get(t, c); got != "tok-2" || src.Calls() != 2 {
		t.Fatalf("after the refresh: %q after %d calls", got, src.Calls())
	}
	// A token past its usable end is not returned: the caller waits.
	src.mu.Lock()
	src.gate = make(chan struct{})
	src.mu.Unlock()
	clk.Advance(95 * time.Second)
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if tok, err := c.Token(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expired token and a hanging refresh: %q, %v", tok.Value.Reveal(), err)
	}
	close(src.gate)
}

// waitUntil polls cond for up to 5 s.
func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
	}
}
