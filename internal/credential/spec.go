package credential

import (
	"net/http"
	"syscall"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
)

// Options are what a source needs beyond the connection's settings.
type Options struct {
	// AllowCommand vets a command source's program (the server's
	// allowlist) and returns the path it runs as; nil refuses every
	// program.
	AllowCommand func(program string) (string, error)
	// CommandEnv is a command's environment (nil: this process's, without
	// PGRELAY_* variables).
	CommandEnv []string
	// CommandDir is a command's working directory (empty: this process's)
	// and CommandCredential the user it runs as (nil: this process's).
	CommandDir        string
	CommandCredential *syscall.Credential
	// HTTPClient is used by the lakebase and alloydb-iam sources
	// (default: the standard transport).
	HTTPClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// New returns the source of the spec's auth, or nil for password. The
// spec's secrets (client secret, service-account key) must be opened. A
// source whose settings are incomplete still is returned: its Token fails
// with a ConfigError that names the field, so a connection test can show
// it as the credential step.
func New(spec *connection.Spec, opts Options) Source {
	a := spec.Auth.Clone()
	if a == nil {
		return nil
	}
	a.ApplyDefaults()
	switch a.Kind {
	case connection.AuthCommand:
		return NewCommandSource(CommandConfig{Program: a.Program, Args: a.Args, Timeout: a.Timeout.Duration(),
			Lifetime: a.Lifetime.Duration(), AllowCommand: opts.AllowCommand, Env: opts.CommandEnv, Dir: opts.CommandDir,
			Credential: opts.CommandCredential, Now: opts.Now})
	case connection.AuthLakebase:
		return NewLakebaseSource(LakebaseConfig{WorkspaceURL: a.WorkspaceURL, ClientID: a.ClientID, ClientSecret: a.ClientSecret,
			Instance: a.Instance, Endpoint: a.Endpoint, Lifetime: a.Lifetime.Duration(), HTTPClient: opts.HTTPClient, Now: opts.Now})
	case connection.AuthAlloyDBIAM:
		return NewAlloyDBSource(AlloyDBConfig{ServiceAccountKey: a.ServiceAccountKey, Scope: a.Scope, HTTPClient: opts.HTTPClient})
	}
	return nil
}
