package apiwire

import "time"

// AuditActor is who did what an audit record records.
type AuditActor struct {
	// Kind is token, local (an OS user on the server's host) or system.
	Kind string `json:"kind"`
	// ID is the token ID or OS user ID; empty for the system.
	ID string `json:"id,omitempty"`
	// Name is the token's name, the OS user name, or the part of pgrelay
	// (scheduler, health-check, retention).
	Name string `json:"name"`
}

// AuditUse is what a use of a connection involved.
type AuditUse struct {
	// KeyFingerprint is the SSH key the tunnel logs in with.
	KeyFingerprint string `json:"key_fingerprint,omitempty"`
	// Hops are the SSH bastions passed, as user@host:port, in order.
	Hops []string `json:"hops,omitempty"`
	// SQLDigests are the digests of the statements run (literals and
	// comments removed, then SHA-256), never their text.
	SQLDigests []string `json:"sql_digests,omitempty"`
	// Commands are the commands run, with secret values masked.
	Commands [][]string `json:"commands,omitempty"`
	// RunID is the run a use belongs to.
	RunID string `json:"run_id,omitempty"`
}

// AuditRecord is one record of the audit log, as GET /audit lists it and
// GET /audit/export writes it (one JSON line each).
type AuditRecord struct {
	// Seq numbers the records from 1, without gaps.
	Seq   int64      `json:"seq"`
	Time  time.Time  `json:"time"`
	Actor AuditActor `json:"actor"`
	// Action is what was done, as noun.verb: connection.create,
	// connection.query, run.start, token.revoke, ...
	Action     string `json:"action"`
	TargetKind string `json:"target_kind"`
	Target     string `json:"target"`
	// Outcome is success or failure.
	Outcome string `json:"outcome"`
	// Error is the class of a failure, never its message.
	Error string `json:"error,omitempty"`
	// Client is the address the request came from.
	Client string    `json:"client,omitempty"`
	Detail string    `json:"detail,omitempty"`
	Use    *AuditUse `json:"use,omitempty"`
	// PrevHash is the hash of the record before; Hash the SHA-256 of this
	// record's canonical encoding (hex).
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
}

// AuditList is the body of GET /audit: records newest first. NextBefore,
// when set, is the before_seq of the next (older) page.
type AuditList struct {
	Records    []AuditRecord `json:"records"`
	NextBefore int64         `json:"next_before,omitempty"`
}

// AuditFilter selects records for GET /audit (its query parameters).
type AuditFilter struct {
	// Since keeps records at or after this time when set.
	Since time.Time
	// Actor keeps records whose actor's name or ID is this.
	Actor string
	// Target keeps records whose target is this: a name or kind:name.
	Target string
	// Action keeps records of this action, or of this noun without a dot.
	Action string
	// BeforeSeq keeps records before this sequence number (to page back).
	BeforeSeq int64
	// Limit caps the result; 0 is the server's default (100).
	Limit int
}

// AuditChain is the audit log's hash chain as stored.
type AuditChain struct {
	// AnchorSeq and AnchorHash are the last record deleted by retention.
	AnchorSeq  int64  `json:"anchor_seq"`
	AnchorHash string `json:"anchor_hash"`
	// HeadSeq and HeadHash are the last record appended.
	HeadSeq  int64  `json:"head_seq"`
	HeadHash string `json:"head_hash"`
}

// AuditVerification is the body of GET /audit/verify.
type AuditVerification struct {
	// OK is true when every record is intact and the chain is whole.
	OK bool `json:"ok"`
	// Records is how many records were checked.
	Records int64      `json:"records"`
	Chain   AuditChain `json:"chain"`
	// Broken, when not OK, is the sequence number of the first broken
	// record; Problem says what is wrong with it.
	Broken  int64  `json:"broken,omitempty"`
	Problem string `json:"problem,omitempty"`
}
