// Package diagnose tests a connection hop by hop and says which hop failed,
// why, and what to change.
//
// [Run] walks the path a real connection takes, one [Step] at a time:
//
//   - for a connection whose password is an expiring token (auth kind
//     command, lakebase or alloydb-iam), first credential: the token is
//     fetched from its source ([Input.Credential]);
//   - through an SSH bastion: resolve (the bastion's name), bastion_tcp,
//     ssh_handshake (host key checked against the pins), ssh_auth, forward
//     (the direct-tcpip channel from the bastion to the database), then tls,
//     postgres_auth, database and query;
//   - direct: resolve (the database's name), tcp, tls, postgres_auth,
//     database and query.
//
// Each step is bounded by its own deadline ([Input.StepTimeout]); after a
// failure the remaining steps are reported as skipped. A failed step carries
// the error and a hint naming the likely cause and its fix. Failures are
// classified by error type (the typed errors of package tunnel, x509 and
// TLS errors, net errors) and by SQLSTATE, never by the text of a message.
//
// The staging uses the same configuration as real connections
// (connection.Spec.PgxConfig and TLSConfig, tunnel.Dial) but performs the
// SSLRequest and TLS handshake itself, so that the tls step is told apart
// from authentication, and watches the server's startup messages (through
// pgx's BuildFrontend hook) to tell postgres_auth from database.
//
// Run does no store writes: it reports what it learned about the bastion's
// host key in [Report.HostKey], and the caller (package app) pins a key seen
// for the first time or records a changed one for approval.
package diagnose

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// StepID names a step.
type StepID string

// Steps, in the order they run.
const (
	StepCredential   StepID = "credential"
	StepResolve      StepID = "resolve"
	StepBastionTCP   StepID = "bastion_tcp"
	StepSSHHandshake StepID = "ssh_handshake"
	StepSSHAuth      StepID = "ssh_auth"
	StepForward      StepID = "forward"
	StepTCP          StepID = "tcp"
	StepTLS          StepID = "tls"
	StepPostgresAuth StepID = "postgres_auth"
	StepDatabase     StepID = "database"
	StepQuery        StepID = "query"
)

// Plan returns the steps a test of spec runs, in order. Through a chain of
// SSH hops, bastion_tcp, ssh_handshake and ssh_auth come once per hop
// (resolve only for the first: a further hop's name is resolved by the
// hop before it); see PlanSteps for which hop each is.
func Plan(spec *connection.Spec) []StepID {
	steps := PlanSteps(spec)
	out := make([]StepID, len(steps))
	for i, s := range steps {
		out[i] = s.ID
	}
	return out
}

// PlannedStep is a step of a plan: its ID and, for the SSH steps of a
// chain of more than one hop, which hop (from 1) of how many.
type PlannedStep struct {
	ID  StepID
	Hop int
	Of  int
}

// PlanSteps returns the steps a test of spec runs, in order, with their
// hops.
func PlanSteps(spec *connection.Spec) []PlannedStep {
	var plan []PlannedStep
	add := func(ids ...StepID) {
		for _, id := range ids {
			plan = append(plan, PlannedStep{ID: id})
		}
	}
	if spec.AuthKind().IsToken() {
		add(StepCredential)
	}
	hops := spec.Hops()
	switch {
	case len(hops) == 1:
		add(StepResolve, StepBastionTCP, StepSSHHandshake, StepSSHAuth)
	case len(hops) > 1:
		n := len(hops)
		plan = append(plan, PlannedStep{ID: StepResolve, Hop: 1, Of: n})
		for i := range hops {
			for _, id := range []StepID{StepBastionTCP, StepSSHHandshake, StepSSHAuth} {
				plan = append(plan, PlannedStep{ID: id, Hop: i + 1, Of: n})
			}
		}
	}
	if len(hops) > 0 {
		add(StepForward, StepTLS, StepPostgresAuth, StepDatabase, StepQuery)
		return plan
	}
	add(StepResolve, StepTCP, StepTLS, StepPostgresAuth, StepDatabase, StepQuery)
	return plan
}

// Status is the outcome of a step.
type Status string

// Statuses.
const (
	// StatusOK: the step passed.
	StatusOK Status = "ok"
	// StatusFailed: the step failed; Error and Hint say why.
	StatusFailed Status = "failed"
	// StatusSkipped: the step did not run, because an earlier one failed
	// or because it was not requested (tls with sslmode=disable; Detail
	// says which).
	StatusSkipped Status = "skipped"
)

// Step is the outcome of one step of a test.
type Step struct {
	ID     StepID `json:"id"`
	Status Status `json:"status"`
	// DurationMS is how long the step took, in milliseconds.
	DurationMS float64 `json:"duration_ms"`
	// Detail says what the step found (addresses, fingerprints, versions).
	Detail string `json:"detail,omitempty"`
	// Error is the failure, for a failed step.
	Error string `json:"error,omitempty"`
	// Hint names the likely cause and the fix. Passed steps may carry one
	// too (e.g. a read-only replica, or a flavor that seems wrong).
	Hint string `json:"hint,omitempty"`
	// Err is the error behind a failed step, for errors.As; not serialised.
	Err error `json:"-"`
	// Hop is, for an SSH step of a chain of more than one hop, the hop it
	// is about (from 1), Of the number of hops and HopAddr the hop's
	// host:port; zero for a single bastion.
	Hop     int    `json:"hop,omitempty"`
	Of      int    `json:"of,omitempty"`
	HopAddr string `json:"hop_addr,omitempty"`
}

// Name is the step's ID, prefixed with its hop in a chain of hops:
// "hop 2 of 3 (bastion-b:22): ssh_auth".
func (s Step) Name() string {
	if s.Hop == 0 {
		return string(s.ID)
	}
	return fmt.Sprintf("hop %d of %d (%s): %s", s.Hop, s.Of, s.HopAddr, s.ID)
}

// HostKeyState says how the bastion's host key related to the pins.
type HostKeyState string

// Host key states.
const (
	// HostKeyPinned: the presented key is one of the pinned keys.
	HostKeyPinned HostKeyState = "pinned"
	// HostKeyFirstUse: nothing was pinned; the key was accepted for this
	// test. The caller may pin it.
	HostKeyFirstUse HostKeyState = "first_use"
	// HostKeyChanged: keys are pinned and the presented one is not among
	// them; the connection was refused before any credential was sent.
	HostKeyChanged HostKeyState = "changed"
	// HostKeyUnapproved: nothing was pinned and host keys are approved
	// before first use ([Input.ApproveHostKeys]); the connection was
	// refused before any credential was sent. The caller may record the
	// key for approval.
	HostKeyUnapproved HostKeyState = "unapproved"
)

// HostKey is what the test learned about the bastion's host key.
type HostKey struct {
	// Fingerprint is the presented key's SHA256 fingerprint.
	Fingerprint string       `json:"fingerprint"`
	State       HostKeyState `json:"state"`
	// Pinned are the fingerprints of the pinned keys.
	Pinned []string `json:"pinned,omitempty"`
	// Key is the presented key.
	Key ssh.PublicKey `json:"-"`
	// Hop is the hop (from 1) in a chain of more than one, and Addr its
	// host:port.
	Hop  int    `json:"hop,omitempty"`
	Addr string `json:"addr,omitempty"`
	// Certificate is true when a host CA vouched for the key (a host
	// certificate): nothing is pinned then.
	Certificate bool `json:"certificate,omitempty"`
}

// ServerInfo is what the query step learned about the server.
type ServerInfo struct {
	// Version is server_version, e.g. "15.8 (Debian 15.8-1.pgdg120+1)".
	Version string `json:"version"`
	// VersionNum is server_version_num, e.g. 150008.
	VersionNum int `json:"version_num"`
	// CurrentUser is current_user.
	CurrentUser string `json:"current_user"`
	// Database is current_database().
	Database string `json:"database"`
	// ReadOnlyReplica is pg_is_in_recovery(): a hot standby.
	ReadOnlyReplica bool `json:"read_only_replica"`
	// RoundTripMS is the best of three SELECT 1 round trips.
	RoundTripMS float64 `json:"round_trip_ms"`
	// Flavor is the flavor the server's own settings point to; empty when
	// it shows nothing specific (plain PostgreSQL, or markers not visible).
	Flavor connection.Flavor `json:"detected_flavor,omitempty"`
	// Encrypted reports whether the session runs over TLS.
	Encrypted bool `json:"encrypted"`
}

// Report is the outcome of a test.
type Report struct {
	// OK is true when no step failed.
	OK    bool   `json:"ok"`
	Steps []Step `json:"steps"`
	// DurationMS is the time the whole test took, in milliseconds.
	DurationMS float64 `json:"duration_ms"`
	// Server is set when the query step passed.
	Server *ServerInfo `json:"server,omitempty"`
	// HostKey is set once a bastion presented its host key (the first
	// hop's, in a chain).
	HostKey *HostKey `json:"host_key,omitempty"`
	// HopHostKeys are the host keys of every hop that presented one, in a
	// chain of more than one hop.
	HopHostKeys []HostKey `json:"hop_host_keys,omitempty"`
	// SSH is what the key exchange with the bastion settled on, once it
	// did (before authentication).
	SSH *tunnel.Negotiated `json:"ssh,omitempty"`
	// FallbackKeyUsed is true when a hop accepted only the fallback key
	// (the old key of a rotation, HopInput.Fallback).
	FallbackKeyUsed bool `json:"fallback_key_used,omitempty"`
	// Credential is set when the credential step fetched a token.
	Credential *CredentialInfo `json:"credential,omitempty"`
}

// Failed returns the failed step, or nil.
func (r *Report) Failed() *Step {
	for i := range r.Steps {
		if r.Steps[i].Status == StatusFailed {
			return &r.Steps[i]
		}
	}
	return nil
}

// Step returns the step with that id, or nil.
func (r *Report) Step(id StepID) *Step {
	for i := range r.Steps {
		if r.Steps[i].ID == id {
			return &r.Steps[i]
		}
	}
	return nil
}

// DefaultStepTimeout bounds each step.
const DefaultStepTimeout = 10 * time.Second

// Input is what a test needs. The caller (package app) decrypts the
// secrets and reads the pins; Run writes nothing.
type Input struct {
	// Spec is the connection, password included. Defaults are applied to a
	// copy.
	Spec connection.Spec
	// SavedName is the saved connection that suggested commands name
	// (pgrelay connection trust-host-key NAME, ...). Empty for a draft
	// that is not saved: hints then say to save it first.
	SavedName string
	// Signer is the connection's SSH key. Nil for a draft without a saved
	// key pair: the test then stops at ssh_auth.
	Signer ssh.Signer
	// Hops, when set, are the keys of each hop of a chain (as many as the
	// spec has hops); Signer, HostKeys and PublicKeyLine are then unused.
	Hops []HopInput
	// HostTrust holds host CAs, revoked keys and known keys for every hop.
	HostTrust sshkey.HostTrust
	// Clock is the time host certificates are checked against (default
	// time.Now).
	Clock func() time.Time
	// FirstHopDial, when set, opens the connection to the first hop (a
	// proxy command) instead of resolving and dialling its address.
	FirstHopDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// PublicKeyLine is the authorized_keys line of Signer (with its
	// comment); the hint when the bastion refuses the key shows it
	// restricted to forwarding to the database.
	PublicKeyLine string
	// HostKeys are the bastion's pinned host keys; empty means none yet.
	HostKeys []ssh.PublicKey
	// PinFirstUse says that the caller pins a host key seen for the first
	// time (a saved connection); it only changes the wording of the
	// ssh_handshake detail.
	PinFirstUse bool
	// ApproveHostKeys refuses a host key when none is pinned (the approve
	// host key policy): ssh_handshake fails and [Report.HostKey] has the
	// state [HostKeyUnapproved].
	ApproveHostKeys bool
	// Network is the policy on the addresses the test dials (the bastion,
	// or the database when direct; for a database behind a bastion, an IP
	// literal host). Nil is egress's default.
	Network *egress.Policy
	// Credential supplies the token of a connection whose auth kind is not
	// password (usually the connection's credential.Cache). Nil means one
	// made by credential.New with no options but Network for its HTTPS
	// requests, which refuses every command.
	Credential credential.Source
	// StepTimeout bounds each step (default [DefaultStepTimeout]).
	StepTimeout time.Duration
	// Logger receives debug events (default: discarded).
	Logger *slog.Logger
}

// HopInput are the keys of one hop.
type HopInput struct {
	// Signer is the key (or certificate) the hop is logged in to with;
	// Fallback a second one (the old key of a rotation).
	Signer, Fallback ssh.Signer
	// HostKeys are the hop's pinned host keys.
	HostKeys []ssh.PublicKey
	// HostKeysUnverified says that HostKeys were given with the connection
	// and no handshake has shown the hop presenting one of them: a key
	// that does not match then more likely means a wrong key was given
	// than a changed one, and the hint says so.
	HostKeysUnverified bool
	// PublicKeyLine is the restricted authorized_keys line for the hop,
	// shown when it refuses the key.
	PublicKeyLine string
	// SignErr, when set, is why no certificate could be made for the hop
	// (its user is not among the SSH CA's principals): Signer and
	// Fallback are nil, the hop's TCP and handshake steps run (with a
	// throwaway key), and ssh_auth fails with SignErr and SignHint.
	SignErr  error
	SignHint string
}

// hopInput returns the keys of hop i.
func (in *Input) hopInput(i int) HopInput {
	if i < len(in.Hops) {
		return in.Hops[i]
	}
	h := HopInput{Signer: in.Signer}
	if i == 0 {
		h.HostKeys = in.HostKeys
	}
	return h
}

// Run tests the connection in.Spec step by step. progress, when not nil,
// is called with each step as it finishes (skipped ones included), in
// order, from the calling goroutine. ctx bounds the whole test.
func Run(ctx context.Context, in Input, progress func(Step)) Report {
	in.Spec = in.Spec.Clone()
	in.Spec.ApplyDefaults()
	if in.StepTimeout <= 0 {
		in.StepTimeout = DefaultStepTimeout
	}
	if in.Logger == nil {
		in.Logger = slog.New(slog.DiscardHandler)
	}
	if in.Clock == nil {
		in.Clock = time.Now
	}
	r := &runner{in: in, spec: &in.Spec, progress: progress, plan: PlanSteps(&in.Spec),
		log: in.Logger.With(slog.String("connection", in.Spec.Name)), logCtx: ctx}
	start := time.Now()
	r.run(ctx)
	r.skipRest("an earlier step failed")
	r.report.OK = r.report.Failed() == nil
	r.report.DurationMS = ms(time.Since(start))
	if r.report.Steps == nil {
		r.report.Steps = []Step{}
	}
	return r.report
}

// runner holds the state of one test.
type runner struct {
	in       Input
	spec     *connection.Spec
	progress func(Step)
	plan     []PlannedStep
	next     int       // index in plan of the next step to report
	cur      *hopState // the hop being tested, while the SSH steps run
	log      *slog.Logger
	// logCtx is the test's context, for the values its log lines carry
	// (the request ID).
	logCtx context.Context
	report Report

	tunnel *tunnel.Tunnel // set once the SSH steps passed
	dbIPs  []net.IP       // resolved database addresses (direct)
}

func (r *runner) run(ctx context.Context) {
	if r.spec.AuthKind().IsToken() && !r.credential(ctx) {
		return
	}
	if r.spec.Tunnel != nil {
		hops, ok := r.hops(ctx)
		defer func() {
			for i := len(hops) - 1; i >= 0; i-- {
				_ = hops[i].Close()
			}
		}()
		if !ok {
			return
		}
		r.tunnel = hops[len(hops)-1]
	} else {
		start := time.Now()
		ips, detail, err := r.resolve(ctx, r.spec.Host)
		if err == nil {
			ips, detail, err = r.permit(r.spec.Host, ips, r.spec.Port, detail)
		}
		if err != nil {
			r.fail(StepResolve, start, err, r.hintResolve(r.spec.Host, err, false))
			return
		}
		r.dbIPs = ips
		r.ok(StepResolve, start, detail, "")
	}
	conn, ok := r.postgres(ctx)
	if !ok {
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	r.query(ctx, conn)
}

// record appends a step and reports it. Steps of the plan that were
// passed over are reported as skipped first, so the order always holds.
func (r *runner) record(s Step) {
	if c := r.cur; c != nil && c.n > 1 && isHopStep(s.ID) {
		s.Hop, s.Of, s.HopAddr = c.i+1, c.n, c.hop.Addr()
	}
	if slices.ContainsFunc(r.plan[r.next:], s.planned) {
		for !s.planned(r.plan[r.next]) {
			r.emit(r.plan[r.next].skipped("not run"))
		}
	}
	r.emit(s)
}

// planned reports whether p is the planned step s is.
func (s Step) planned(p PlannedStep) bool { return p.ID == s.ID && p.Hop == s.Hop }

// skipped is the step p reported as skipped, for why.
func (p PlannedStep) skipped(why string) Step {
	s := Step{ID: p.ID, Status: StatusSkipped, Detail: why, Hop: p.Hop, Of: p.Of}
	return s
}

// isHopStep reports whether id is one of the steps of each SSH hop.
func isHopStep(id StepID) bool {
	return id == StepResolve || id == StepBastionTCP || id == StepSSHHandshake || id == StepSSHAuth
}

func (r *runner) emit(s Step) {
	if s.Hop > 0 && s.HopAddr == "" {
		if hops := r.spec.Hops(); s.Hop <= len(hops) {
			s.HopAddr = hops[s.Hop-1].Addr()
		}
	}
	if r.next < len(r.plan) && s.planned(r.plan[r.next]) {
		r.next++
	}
	r.report.Steps = append(r.report.Steps, s)
	r.log.DebugContext(r.logCtx, "connection test step", slog.String("step", string(s.ID)), slog.String("status", string(s.Status)),
		slog.Float64("duration_ms", s.DurationMS), slog.String("error", s.Error))
	if r.progress != nil {
		r.progress(s)
	}
}

func (r *runner) ok(id StepID, start time.Time, detail, hint string) {
	r.record(Step{ID: id, Status: StatusOK, DurationMS: ms(time.Since(start)), Detail: detail, Hint: hint})
}

// notRequested reports a step that the settings do not ask for (tls with
// sslmode=disable): skipped, not failed.
func (r *runner) notRequested(id StepID, detail string) {
	r.record(Step{ID: id, Status: StatusSkipped, Detail: detail})
}

func (r *runner) fail(id StepID, start time.Time, err error, hint string) {
	r.record(Step{ID: id, Status: StatusFailed, DurationMS: ms(time.Since(start)), Error: errorText(err),
		Hint: hint, Err: err})
}

// skipRest reports the steps that did not run.
func (r *runner) skipRest(why string) {
	for r.next < len(r.plan) {
		r.emit(r.plan[r.next].skipped(why))
	}
}

// ms converts d to milliseconds rounded to 0.01.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Millisecond)*100) / 100
}

// AuthRefusedError means pgrelay refused the authentication method the
// server asked for, by the connection's require_auth policy (its own, or
// the default that refuses a clear-text password over an unverified hop).
type AuthRefusedError struct {
	// Method is the method the server asked for, as require_auth names it.
	Method string
	// Policy is the require_auth policy in force.
	Policy string
	// Err is pgx's error.
	Err error
}

// Error names the method and the policy that refused it.
func (e *AuthRefusedError) Error() string {
	return fmt.Sprintf("the server asked for %s authentication, which require_auth %q refuses: no password was sent", e.Method, e.Policy)
}

// Unwrap returns pgx's error.
func (e *AuthRefusedError) Unwrap() error { return e.Err }

// StepTimeoutError means a step did not finish within its deadline.
type StepTimeoutError struct {
	// Step is the step that timed out.
	Step StepID
	// After is the step's deadline.
	After time.Duration
	// Err is what the operation returned when it was cut off.
	Err error
}

// Error says which step timed out and after how long.
func (e *StepTimeoutError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: no answer within %v: %v", e.Step, e.After, e.Err)
	}
	return fmt.Sprintf("%s: no answer within %v", e.Step, e.After)
}

// Unwrap returns the error the operation was cut off with.
func (e *StepTimeoutError) Unwrap() error { return e.Err }

// Timeout reports true: it is a time-out.
func (e *StepTimeoutError) Timeout() bool { return true }

// errStepTimeout is the cancel cause of a watchdog that fired.
var errStepTimeout = errors.New("step deadline exceeded")

// watchdog cancels its context when a phase lasts longer than timeout;
// reset starts a new phase. It bounds each step of an operation that runs
// several steps in one call (tunnel.Dial, a PostgreSQL login).
type watchdog struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	timeout time.Duration

	mu    sync.Mutex
	timer *time.Timer
	fired bool
}

func newWatchdog(parent context.Context, timeout time.Duration) *watchdog {
	ctx, cancel := context.WithCancelCause(parent)
	w := &watchdog{ctx: ctx, cancel: cancel, timeout: timeout}
	w.mu.Lock()
	w.timer = time.AfterFunc(timeout, w.fire)
	w.mu.Unlock()
	return w
}

func (w *watchdog) fire() {
	w.mu.Lock()
	w.fired = true
	w.mu.Unlock()
	w.cancel(errStepTimeout)
}

// reset starts a new phase with a full timeout, unless it already fired.
func (w *watchdog) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fired {
		return
	}
	w.timer.Stop()
	w.timer.Reset(w.timeout)
}

// timedOut reports whether a phase ran out of time.
func (w *watchdog) timedOut() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fired
}

// stop ends the watchdog and releases its context.
func (w *watchdog) stop() {
	w.mu.Lock()
	w.timer.Stop()
	w.mu.Unlock()
	w.cancel(context.Canceled)
}

// resolve looks host up; IP literals resolve to themselves.
func (r *runner) resolve(ctx context.Context, host string) ([]net.IP, string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, fmt.Sprintf("%s is an IP address: nothing to resolve", host), nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.in.StepTimeout)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = &StepTimeoutError{Step: StepResolve, After: r.in.StepTimeout, Err: err}
		}
		return nil, "", fmt.Errorf("resolve %s: %w", host, err)
	}
	ips := make([]net.IP, 0, len(addrs))
	list := ""
	for i, a := range addrs {
		ips = append(ips, a.IP)
		if i < 4 {
			if i > 0 {
				list += ", "
			}
			list += a.IP.String()
		}
	}
	if len(addrs) > 4 {
		list += fmt.Sprintf(" and %d more", len(addrs)-4)
	}
	return ips, fmt.Sprintf("%s resolved to %s", host, list), nil
}

// permit keeps the resolved addresses the network policy allows. When it
// refuses them all, the error is the refusal of the first; when it refuses
// some, detail says which.
func (r *runner) permit(host string, ips []net.IP, port int, detail string) ([]net.IP, string, error) {
	var allowed []net.IP
	var refused []string
	var first error
	for _, ip := range ips {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		name := host
		if net.ParseIP(host) != nil {
			name = ""
		}
		if err := r.in.Network.Check(name, a, uint16(port)); err != nil {
			if first == nil {
				first = err
			}
			refused = append(refused, a.Unmap().String())
			continue
		}
		allowed = append(allowed, ip)
	}
	if len(allowed) == 0 && first != nil {
		return nil, "", first
	}
	if len(refused) > 0 {
		detail += fmt.Sprintf("; %s refused by the network policy", strings.Join(refused, ", "))
	}
	return allowed, detail, nil
}

// dialIPs connects to port on each address in turn and returns the first
// connection made, or the last error. The policy refuses a denied address
// before connecting.
func dialIPs(ctx context.Context, policy *egress.Policy, ips []net.IP, port int) (net.Conn, error) {
	d := policy.Dialer()
	var lastErr error
	for _, ip := range ips {
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		if err == nil {
			return c, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	if lastErr == nil {
		lastErr = errors.New("no address to connect to")
	}
	return nil, lastErr
}

// ephemeralSigner is a throwaway key for drafts without a key pair: it
// carries the test through the handshake, and the bastion refuses it.
func ephemeralSigner() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate throwaway key: %w", err)
	}
	return ssh.NewSignerFromKey(priv)
}

// errorText renders err for Step.Error: what failed, without advice (the
// hint holds that). PostgreSQL errors show the server's message and
// SQLSTATE; the tunnel's typed errors, whose own text carries advice, are
// reduced to their facts.
func errorText(err error) string {
	if err == nil {
		return ""
	}
	var te *StepTimeoutError
	if errors.As(err, &te) {
		if te.Err == nil {
			return fmt.Sprintf("no answer within %v", te.After)
		}
		return fmt.Sprintf("no answer within %v: %s", te.After, factText(te.Err))
	}
	return factText(err)
}

func factText(err error) string {
	if pgErr := asPgError(err); pgErr != nil {
		return pgErrorText(pgErr)
	}
	var (
		dialErr  *tunnel.DialError
		hsErr    *tunnel.HandshakeError
		mismatch *tunnel.HostKeyMismatchError
		authErr  *tunnel.AuthError
		fwdErr   *tunnel.ForwardError
		algErr   *tunnel.AlgorithmError
		denied   *egress.DeniedError
		credNet  *credential.NetworkDeniedError
	)
	switch {
	case errors.As(err, &credNet):
		return fmt.Sprintf("%s %s: %s is in %s, denied by %s: pgrelay's network policy refused it before connecting",
			credNet.Field, credNet.URL, deniedTarget(credNet.Err), credNet.Err.Rule.Prefix, credNet.Err.Rule)
	case errors.As(err, &denied):
		return fmt.Sprintf("%s is in %s, denied by %s: pgrelay's network policy refused it before connecting",
			deniedTarget(denied), denied.Rule.Prefix, denied.Rule)
	case errors.As(err, &algErr):
		return fmt.Sprintf("SSH bastion %s offers no %s algorithm that pgrelay accepts: it offers %s",
			algErr.Addr, algErr.What, strings.Join(algErr.Offered, ", "))
	case errors.As(err, &dialErr):
		return fmt.Sprintf("TCP connection to SSH bastion %s: %v", dialErr.Addr, dialErr.Err)
	case errors.As(err, &hsErr):
		return fmt.Sprintf("SSH handshake with bastion %s: %v", hsErr.Addr, hsErr.Err)
	case errors.As(err, &mismatch) && mismatch.PinnedNotOffered():
		// Not a changed key: the bastion could not present the pinned one.
		return fmt.Sprintf("SSH bastion %s did not present a pinned host key: it offers only the host key algorithms %s, "+
			"none of which pgrelay accepts for the pinned key %s (%s); it presented %s",
			mismatch.Addr, strings.Join(mismatch.Offered, ", "), strings.Join(mismatch.Pinned, " or "),
			strings.Join(mismatch.PinnedAlgorithms, ", "), mismatch.Presented)
	case errors.As(err, &mismatch) && len(mismatch.Pinned) > 0:
		return fmt.Sprintf("host key mismatch for bastion %s: it presented %s, the pinned key is %s",
			mismatch.Addr, mismatch.Presented, strings.Join(mismatch.Pinned, " or "))
	case errors.As(err, &mismatch) && mismatch.Err == nil:
		return fmt.Sprintf("SSH bastion %s presented host key %s, and no host key is pinned for it",
			mismatch.Addr, mismatch.Presented)
	case errors.As(err, &authErr):
		return fmt.Sprintf("SSH bastion %s refused public key %s for user %s (methods it offers: %s)",
			authErr.Addr, authErr.KeyFingerprint, authErr.User, strings.Join(authErr.Methods, ", "))
	case errors.As(err, &fwdErr):
		return fmt.Sprintf("SSH bastion %s could not open a channel to %s: %s (%s)",
			fwdErr.Bastion, fwdErr.Target, fwdErr.Reason, fwdErr.Message)
	}
	return err.Error()
}
