package cli

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// commandFlags decide how command steps run: the flags of `serve` and of a
// local `job run`.
type commandFlags struct {
	allow    []string
	runAs    string
	workdirs []string
}

func (f *commandFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringArrayVar(&f.allow, "allow-command", nil, "a program command steps may run (repeatable), e.g. --allow-command dbt --allow-command psql; "+
		"resolved to its absolute path at start (env "+jobs.AllowCommandsEnv+", comma-separated, when no flag is given)")
	fs.StringVar(&f.runAs, "run-as", "", "run command steps as this unprivileged OS user, with a minimal environment and a private TMPDIR, "+
		"and connections' proxy and token commands as that user too "+
		"(needs root with "+jobs.RunAsCapabilities+"; the data dir must be closed to that user: chmod 700)")
	fs.StringArrayVar(&f.workdirs, "allow-workdir", nil, "a directory that command steps' workdirs must be inside, symlinks resolved (repeatable; default: anywhere)")
}

// given reports whether any of the flags was given.
func (f *commandFlags) given() bool {
	return len(f.allow) > 0 || f.runAs != "" || len(f.workdirs) > 0
}

// commandPolicy builds the policy of command steps from f (and
// PGRELAY_ALLOW_COMMANDS), resolving the allowed programs and directories,
// and logs it. With --run-as it refuses a data dir, or a master key file
// (PGRELAY_MASTER_KEY_FILE), that user could read.
func (r *runner) commandPolicy(f commandFlags) (jobs.CommandPolicy, error) {
	allow, err := jobs.NewAllowlist(jobs.ParseAllowCommands(f.allow, r.env.Getenv(jobs.AllowCommandsEnv)))
	if err != nil {
		return jobs.CommandPolicy{}, usageError{err}
	}
	p := jobs.CommandPolicy{Allow: allow}
	// Credential commands of connections are held to the same list.
	r.credAllow.Store(allow)
	if p.Workdirs, err = jobs.ResolveWorkdirs(f.workdirs); err != nil {
		return jobs.CommandPolicy{}, usageError{err}
	}
	if f.runAs != "" {
		u, err := jobs.LookupRunAs(f.runAs)
		if err != nil {
			return jobs.CommandPolicy{}, usageError{err}
		}
		if err := u.CheckNoAccess(r.dataDir); err != nil {
			var ae *jobs.AccessError
			if errors.As(err, &ae) {
				return jobs.CommandPolicy{}, usagef("--run-as %s: commands must not be able to read pgrelay's data dir (master.key, the SQLite store), "+
					"but %v. Fix: %s", f.runAs, err, closeFix(ae, r.dataDir, "700"))
			}
			return jobs.CommandPolicy{}, err
		}
		// A master key kept outside the data dir opens every secret too.
		if kf := r.env.Getenv(secret.MasterKeyFileEnv); kf != "" && r.env.Getenv(secret.MasterKeyEnv) == "" {
			if err := u.CheckNoAccess(kf); err != nil {
				var ae *jobs.AccessError
				if errors.As(err, &ae) {
					return jobs.CommandPolicy{}, usagef("--run-as %s: commands must not be able to read the master key (%s), "+
						"but %v. Fix: %s", f.runAs, secret.MasterKeyFileEnv, err, closeFix(ae, kf, "600"))
				}
				return jobs.CommandPolicy{}, err
			}
		}
		if su, err := url.Parse(r.storeURL); err == nil && su.User != nil {
			if _, ok := su.User.Password(); ok {
				return jobs.CommandPolicy{}, usagef("--run-as %s: --store holds a password, and every user can read a process's arguments: "+
					"give the store URL in PGRELAY_STORE instead", f.runAs)
			}
		}
		p.RunAs = u
	}
	// So do they run as the user of --run-as: whoever saves a connection
	// chooses their arguments.
	r.commandUser.Store(p.RunAs)
	r.logger.Info("command steps", p.LogAttrs()...)
	return p, nil
}

// closeFix says how to close path to the user of --run-as: a chmod to mode,
// and first a chown to pgrelay's own user when that user owns it (its
// owner could open it again).
func closeFix(ae *jobs.AccessError, path, mode string) string {
	chmod := fmt.Sprintf("chmod %s %s (owned by the user pgrelay runs as)", mode, path)
	if ae.Owned {
		return fmt.Sprintf("chown -R %d %s (the user pgrelay runs as), then %s", os.Getuid(), path, chmod)
	}
	if strings.Contains(ae.Why, "ACL") {
		return fmt.Sprintf("setfacl -b %s, and %s", path, chmod)
	}
	return chmod
}
