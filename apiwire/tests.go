package apiwire

import "time"

// Status of a connection test's step.
const (
	StepOK      = "ok"
	StepFailed  = "failed"
	StepSkipped = "skipped"
)

// TestReport is the body (or the last event) of a connection test.
type TestReport struct {
	// Connection is the tested connection's name.
	Connection string `json:"connection"`
	// Draft is true for the test of an unsaved connection.
	Draft bool `json:"draft,omitempty"`
	Report
}

// Report is the outcome of a staged connection test.
type Report struct {
	// OK is true when no step failed.
	OK    bool       `json:"ok"`
	Steps []TestStep `json:"steps"`
	// DurationMS is the time the whole test took, in milliseconds.
	DurationMS float64 `json:"duration_ms"`
	// Server is set when the query step passed.
	Server *ServerInfo `json:"server,omitempty"`
	// HostKey is set once a bastion presented its host key.
	HostKey *HostKey `json:"host_key,omitempty"`
	// HopHostKeys are the host keys of every hop that presented one, in a
	// chain of more than one hop.
	HopHostKeys []HostKey `json:"hop_host_keys,omitempty"`
	// SSH is what the key exchange with the bastion settled on.
	SSH *Negotiated `json:"ssh,omitempty"`
	// FallbackKeyUsed is true when a hop accepted only the old key of a
	// key rotation.
	FallbackKeyUsed bool `json:"fallback_key_used,omitempty"`
	// Credential is set when the credential step fetched a token.
	Credential *CredentialInfo `json:"credential,omitempty"`
}

// TestStep is one step of a connection test (also the step event).
type TestStep struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	// DurationMS is how long the step took, in milliseconds.
	DurationMS float64 `json:"duration_ms"`
	// Detail says what the step found.
	Detail string `json:"detail,omitempty"`
	// Error is the failure, for a failed step.
	Error string `json:"error,omitempty"`
	// Hint names the likely cause and the fix.
	Hint string `json:"hint,omitempty"`
	// Hop is, for an SSH step of a chain of more than one hop, the hop it
	// is about (from 1), Of the number of hops and HopAddr its host:port;
	// zero for a single bastion.
	Hop     int    `json:"hop,omitempty"`
	Of      int    `json:"of,omitempty"`
	HopAddr string `json:"hop_addr,omitempty"`
}

// ServerInfo is what the test learnt of the database server.
type ServerInfo struct {
	Version         string  `json:"version"`
	VersionNum      int     `json:"version_num"`
	CurrentUser     string  `json:"current_user"`
	Database        string  `json:"database"`
	ReadOnlyReplica bool    `json:"read_only_replica"`
	RoundTripMS     float64 `json:"round_trip_ms"`
	Flavor          string  `json:"detected_flavor,omitempty"`
	Encrypted       bool    `json:"encrypted"`
}

// HostKey is the bastion's host key as the test saw it.
type HostKey struct {
	Fingerprint string `json:"fingerprint"`
	// State is pinned_now, matches, changed or pending.
	State  string   `json:"state"`
	Pinned []string `json:"pinned,omitempty"`
	// Hop is the hop (from 1) in a chain of more than one, and Addr its
	// host:port.
	Hop  int    `json:"hop,omitempty"`
	Addr string `json:"addr,omitempty"`
	// Certificate is true when a host CA vouched for the key.
	Certificate bool `json:"certificate,omitempty"`
}

// Negotiated is what the SSH key exchange settled on.
type Negotiated struct {
	ServerVersion    string `json:"server_version"`
	KeyExchange      string `json:"key_exchange"`
	HostKeyAlgorithm string `json:"host_key_algorithm"`
	Cipher           string `json:"cipher"`
	ServerCipher     string `json:"server_cipher,omitempty"`
	MAC              string `json:"mac,omitempty"`
	ServerMAC        string `json:"server_mac,omitempty"`
}

// CredentialInfo is the token password the credential step fetched.
type CredentialInfo struct {
	Kind      string    `json:"kind"`
	Source    string    `json:"source"`
	ExpiresAt time.Time `json:"expires_at"`
}

// QueryRequest is the body of POST /connections/{name}/query.
type QueryRequest struct {
	// SQL is one or more statements, run with the simple protocol.
	SQL string `json:"sql"`
}

// QueryResponse is the body of a query's answer.
type QueryResponse struct {
	Results []ResultSet `json:"results"`
	// Truncated is true when the server stopped reading rows at its limit.
	Truncated bool `json:"truncated"`
}

// ResultSet is the result of one statement.
type ResultSet struct {
	Columns []Column `json:"columns"`
	// Rows hold values in PostgreSQL's text format; null is SQL NULL.
	Rows [][]*string `json:"rows"`
	// CommandTag is e.g. "SELECT 3"; empty when truncated.
	CommandTag string `json:"command_tag"`
	// Truncated is true when rows were left out after the row limit.
	Truncated bool `json:"truncated,omitempty"`
}

// Column is a result column.
type Column struct {
	Name    string `json:"name"`
	TypeOID uint32 `json:"type_oid"`
}

// GrantsRequest is the body of POST /connections/{name}/grants.
type GrantsRequest struct {
	// TargetSchema is the schema the workload writes to. Required.
	TargetSchema string `json:"target_schema"`
	// SourceSchemas are the schemas it reads from.
	SourceSchemas []string `json:"source_schemas"`
	// Role is the role to audit; empty is the connection's user.
	Role string `json:"role,omitempty"`
	// CreateSchemas says the workload creates schemas itself.
	CreateSchemas bool `json:"create_schemas,omitempty"`
}

// GrantsResponse is the body of a privilege audit.
type GrantsResponse struct {
	// Connection is the audited connection's name.
	Connection string `json:"connection"`
	GrantsResult
	// OK is true when nothing is missing and every check could be made.
	OK bool `json:"ok"`
	// Missing counts the checks that are missing or not found.
	Missing int `json:"missing"`
	// SQL is the statements as one script, with their reasons.
	SQL string `json:"sql"`
}

// GrantsResult is a privilege audit.
type GrantsResult struct {
	Role       string        `json:"role"`
	Database   string        `json:"database"`
	Superuser  bool          `json:"superuser"`
	Request    GrantsRequest `json:"request"`
	Checks     []GrantCheck  `json:"checks"`
	Statements []GrantSQL    `json:"statements"`
	Incomplete string        `json:"incomplete,omitempty"`
}

// GrantCheck is one privilege checked.
type GrantCheck struct {
	ObjectType string `json:"object_type"`
	Schema     string `json:"schema,omitempty"`
	Name       string `json:"name"`
	Privilege  string `json:"privilege"`
	Status     string `json:"status"`
	Note       string `json:"note,omitempty"`
}

// GrantSQL is one statement that grants what is missing.
type GrantSQL struct {
	SQL    string `json:"sql"`
	Reason string `json:"reason"`
}
