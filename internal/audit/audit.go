// Package audit is pgrelay's tamper-evident audit log: one record for every
// change (connections, keys, host-key approvals, jobs, tokens, settings)
// and every use (queries, tests, grants audits, runs, local exec and
// proxy), saying who did what to which record, from where, and how it
// went.
//
// Records are append-only and hash-chained: each carries the SHA-256 hash
// of its own canonical encoding, which includes the previous record's
// hash, so that editing or deleting a record breaks the chain from there
// on ([Verify] names the first broken record). Retention deletes the
// oldest records and moves the chain's anchor (the last deleted record's
// sequence number and hash) in the same transaction. Someone who can write
// the store can still rewrite the whole chain from a record on; an export
// to a SIEM (JSON lines) or a noted head hash (`pgrelay audit verify`
// prints it) shows that.
//
// A record never holds a secret or SQL text: a statement is recorded as
// its digest (see package pg), a command's arguments with secret values
// masked ([MaskCommand]), and a failure as a short class, never a message.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ActorKind says what kind of actor did something.
type ActorKind string

// Actor kinds.
const (
	// ActorToken is an API token (the REST API, the web UI, the CLI with
	// --server): ID and name are the token's.
	ActorToken ActorKind = "token"
	// ActorLocal is a person running the CLI on the data dir: ID is the
	// OS user ID, name the user name.
	ActorLocal ActorKind = "local"
	// ActorSystem is pgrelay itself: schedules, health checks, retention.
	ActorSystem ActorKind = "system"
)

// Actor is who did something.
type Actor struct {
	Kind ActorKind `json:"kind"`
	// ID is the token ID or OS user ID; empty for the system.
	ID string `json:"id,omitempty"`
	// Name is the token's name, the OS user name, or the part of pgrelay
	// (scheduler, health-check, retention).
	Name string `json:"name"`
}

// String renders the actor for people: "token ci (tok_...)",
// "local alice (uid 1000)", "system scheduler".
func (a Actor) String() string {
	switch {
	case a.Kind == ActorLocal && a.ID != "":
		return fmt.Sprintf("local %s (uid %s)", a.Name, a.ID)
	case a.ID != "":
		return fmt.Sprintf("%s %s (%s)", a.Kind, a.Name, a.ID)
	}
	return string(a.Kind) + " " + a.Name
}

// System returns the actor for a part of pgrelay working on its own.
func System(part string) Actor { return Actor{Kind: ActorSystem, Name: part} }

// LocalUser returns the actor for the OS user running this process.
func LocalUser() Actor {
	u, err := user.Current()
	if err != nil {
		return Actor{Kind: ActorLocal, Name: "unknown"}
	}
	return Actor{Kind: ActorLocal, ID: u.Uid, Name: u.Username}
}

// Outcome says how an action went.
type Outcome string

// Outcomes.
const (
	OK     Outcome = "ok"
	Failed Outcome = "failed"
)

// Target kinds.
const (
	TargetConnection = "connection"
	TargetJob        = "job"
	TargetRun        = "run"
	TargetToken      = "token"
	TargetSession    = "session"
	TargetStore      = "store"
	TargetAudit      = "audit"
	// TargetRoute is an API route ("POST /api/v1/connections"): the target
	// of a refused request.
	TargetRoute = "route"
)

// Record is one entry of the audit log.
type Record struct {
	// Seq numbers the records from 1, without gaps; assigned by the store.
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	// Actor is who did it.
	Actor Actor `json:"actor"`
	// Action is what was done, as noun.verb: connection.create,
	// connection.query, run.start, token.revoke, ...
	Action string `json:"action"`
	// TargetKind and Target name the record acted on (connection
	// "warehouse", run "<id>"...).
	TargetKind string  `json:"target_kind"`
	Target     string  `json:"target"`
	Outcome    Outcome `json:"outcome"`
	// Error is the class of a failure (not_found, invalid, unreachable,
	// sqlstate 42501, ...), never its message.
	Error string `json:"error,omitempty"`
	// Client is the address the request came from (empty for local and
	// system actions).
	Client string `json:"client,omitempty"`
	// Detail is a short description made of safe values (a role, the jobs
	// applied, a count).
	Detail string `json:"detail,omitempty"`
	// Use says what a use of a connection involved.
	Use *Use `json:"use,omitempty"`
	// PrevHash is the hash of the record before (of the chain's anchor for
	// the first; empty at the start of the log).
	PrevHash string `json:"prev_hash"`
	// Hash is the SHA-256 of the record's canonical encoding (hex).
	Hash string `json:"hash"`
}

// Use is what a use of a connection involved.
type Use struct {
	// KeyFingerprint is the SSH key the tunnel logs in with.
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	// Hops are the SSH bastions passed, as user@host:port, in order; a
	// hop that logs in with a key pair of its own is followed by " own key"
	// and that key's fingerprint.
	Hops []string `json:"hops,omitempty"`
	// SQLDigests are the digests of the statements run (pg.Digest).
	SQLDigests []string `json:"sql_digests,omitempty"`
	// Commands are the commands run: program and arguments, with secret
	// values masked.
	Commands [][]string `json:"commands,omitempty"`
	// RunID is the run a use belongs to.
	RunID string `json:"run_id,omitempty"`
}

// empty reports whether u says nothing.
func (u *Use) empty() bool {
	return u == nil || u.KeyFingerprint == "" && len(u.Hops) == 0 && len(u.SQLDigests) == 0 && len(u.Commands) == 0 && u.RunID == ""
}

// Normalize makes r storable and its encoding canonical: the time in UTC
// at microsecond precision (what both store backends keep), strings valid
// UTF-8 without NUL characters (what PostgreSQL's text holds), and an
// empty Use as nil. The stores call it before sealing.
func (r *Record) Normalize() {
	r.Time = r.Time.UTC().Truncate(time.Microsecond)
	for _, p := range []*string{&r.Actor.ID, &r.Actor.Name, &r.Action, &r.TargetKind, &r.Target, &r.Error,
		&r.Client, &r.Detail} {
		*p = clean(*p)
	}
	r.Actor.Kind = ActorKind(clean(string(r.Actor.Kind)))
	r.Outcome = Outcome(clean(string(r.Outcome)))
	if r.Use.empty() {
		r.Use = nil
		return
	}
	u := *r.Use
	u.KeyFingerprint, u.RunID = clean(u.KeyFingerprint), clean(u.RunID)
	u.Hops = cleanAll(u.Hops)
	u.SQLDigests = cleanAll(u.SQLDigests)
	if len(u.Commands) == 0 {
		u.Commands = nil
	} else {
		cmds := make([][]string, len(u.Commands))
		for i, c := range u.Commands {
			cmds[i] = cleanAll(c)
			if cmds[i] == nil {
				cmds[i] = []string{}
			}
		}
		u.Commands = cmds
	}
	r.Use = &u
}

func cleanAll(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = clean(s)
	}
	return out
}

// clean returns s as valid UTF-8 without NUL characters.
func clean(s string) string {
	if utf8.ValidString(s) && !strings.Contains(s, "\x00") {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// hashVersion starts the hashed bytes, so that a future encoding can be
// told apart.
const hashVersion = "pgrelay-audit-v1\n"

// canonical is the encoding that is hashed: every field but Hash, in a
// fixed order, the time as RFC 3339 in UTC with microseconds.
type canonical struct {
	Seq        int64   `json:"seq"`
	Time       string  `json:"time"`
	Actor      Actor   `json:"actor"`
	Action     string  `json:"action"`
	TargetKind string  `json:"target_kind"`
	Target     string  `json:"target"`
	Outcome    Outcome `json:"outcome"`
	Error      string  `json:"error"`
	Client     string  `json:"client"`
	Detail     string  `json:"detail"`
	Use        *Use    `json:"use"`
	PrevHash   string  `json:"prev_hash"`
}

// ComputeHash returns the hash r should carry: SHA-256 (hex) over its
// canonical encoding, PrevHash included and Hash excluded. r must be
// normalized.
func ComputeHash(r *Record) string {
	b, err := json.Marshal(canonical{Seq: r.Seq, Time: r.Time.UTC().Format("2006-01-02T15:04:05.000000Z"),
		Actor: r.Actor, Action: r.Action, TargetKind: r.TargetKind, Target: r.Target, Outcome: r.Outcome,
		Error: r.Error, Client: r.Client, Detail: r.Detail, Use: r.Use, PrevHash: r.PrevHash})
	if err != nil {
		// Only strings, numbers and slices of them: cannot fail.
		panic(fmt.Sprintf("audit: encode record: %v", err))
	}
	h := sha256.New()
	h.Write([]byte(hashVersion))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// Seal makes r the record after head: it normalizes r, gives it the next
// sequence number and the previous hash, and computes its hash. The
// stores call it inside the transaction that appends r.
func Seal(r *Record, head Chain) {
	r.Normalize()
	r.Seq = head.HeadSeq + 1
	r.PrevHash = head.HeadHash
	r.Hash = ComputeHash(r)
}

// Chain is the state of the log's hash chain, kept by the store with the
// records: where it starts (the anchor, moved by retention) and where it
// ends (the head, moved by each append).
type Chain struct {
	// AnchorSeq and AnchorHash are the last record deleted by retention
	// (0 and "" while none was): the first record kept follows them.
	AnchorSeq  int64  `json:"anchor_seq"`
	AnchorHash string `json:"anchor_hash"`
	// HeadSeq and HeadHash are the last record appended (equal to the
	// anchor when the log is empty).
	HeadSeq  int64  `json:"head_seq"`
	HeadHash string `json:"head_hash"`
}

// Filter selects records to list.
type Filter struct {
	// Since keeps records at or after this time when set.
	Since time.Time
	// Actor keeps records whose actor's name or ID is this, when set.
	Actor string
	// Target keeps records whose target is this, when set: a name
	// ("warehouse") or kind:name ("connection:warehouse").
	Target string
	// Action keeps records of this action, or of this noun when it has no
	// dot ("connection" keeps connection.*).
	Action string
	// BeforeSeq keeps records before this sequence number, when set (to
	// page back).
	BeforeSeq int64
	// Limit caps the result, newest first; 0 means DefaultLimit.
	Limit int
}

// Limits of Filter.Limit.
const (
	DefaultLimit = 100
	MaxLimit     = 10_000
)

// TargetParts splits a filter's target into kind and name; kind is empty
// for a bare name.
func (f Filter) TargetParts() (kind, name string) {
	if k, n, ok := strings.Cut(f.Target, ":"); ok && isKind(k) {
		return k, n
	}
	return "", f.Target
}

func isKind(k string) bool {
	switch k {
	case TargetConnection, TargetJob, TargetRun, TargetToken, TargetSession, TargetStore, TargetAudit, TargetRoute:
		return true
	}
	return false
}

// ActionPattern returns the action to match exactly, or the prefix
// ("connection.") of a bare noun.
func (f Filter) ActionPattern() (exact, prefix string) {
	if f.Action == "" {
		return "", ""
	}
	if strings.Contains(f.Action, ".") {
		return f.Action, ""
	}
	return "", f.Action + "."
}

// Normalized returns f with its limit in range and Since at the
// microsecond precision of stored times.
func (f Filter) Normalized() Filter {
	f.Since = f.Since.Truncate(time.Microsecond)
	if f.Limit <= 0 {
		f.Limit = DefaultLimit
	}
	f.Limit = min(f.Limit, MaxLimit)
	return f
}

type ctxKey int

const (
	actorKey ctxKey = iota
	clientKey
)

// WithActor returns ctx carrying the actor of what is done with it (for
// actions without an authenticated principal).
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey, a)
}

// ActorFrom returns the actor WithActor put in ctx.
func ActorFrom(ctx context.Context) (Actor, bool) {
	a, ok := ctx.Value(actorKey).(Actor)
	return a, ok
}

// WithClient returns ctx carrying the address a request came from.
func WithClient(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, clientKey, addr)
}

// ClientFrom returns the address WithClient put in ctx, or "".
func ClientFrom(ctx context.Context) string {
	s, _ := ctx.Value(clientKey).(string)
	return s
}

// ParseSince reads a --since value: a duration back from now ("24h",
// "30m") or an RFC 3339 time or date ("2026-01-02").
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if strings.HasSuffix(s, "d") {
		if n, err := strconv.Atoi(strings.TrimSuffix(s, "d")); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not accepted: give a duration back from now (30m, 24h, 7d) or a time (2026-01-02 or 2026-01-02T15:04:05Z)", s)
}
