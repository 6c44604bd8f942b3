package cli

import (
	"net/netip"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// Environment variables of the connection policies; a flag given on the
// command line wins over its variable.
const (
	hostKeyPolicyEnv = "PGRELAY_HOST_KEY_POLICY"
	sshKnownHostsEnv = "PGRELAY_SSH_KNOWN_HOSTS"
	denyNetworkEnv   = "PGRELAY_DENY_NETWORK"
	allowNetworkEnv  = "PGRELAY_ALLOW_NETWORK"
)

// policyFlags are the global flags that govern how the process opens
// connections: `pgrelay serve` for the web UI and API, the local commands
// (query, proxy, exec, job run, connection test) for themselves.
type policyFlags struct {
	hostKeyPolicy string
	deny, allow   []string
	knownHosts    string

	// Resolved by check.
	policy  app.HostKeyPolicy
	network *egress.Policy
	trust   sshkey.HostTrust
}

func (f *policyFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.hostKeyPolicy, "host-key-policy", "", "when no host key is pinned for a bastion: tofu pins the first key it presents "+
		"(default), approve holds it until pgrelay connection trust-host-key (env "+hostKeyPolicyEnv+")")
	fs.StringSliceVar(&f.deny, "deny-network", nil, "never connect to bastions, direct databases or token endpoints (Lakebase, AlloyDB) in this address range, "+
		"e.g. 10.0.0.0/8 (repeatable or comma-separated; env "+denyNetworkEnv+"); 169.254.0.0/16 and fd00:ec2::254/128 "+
		"(cloud metadata) are denied by default")
	fs.StringSliceVar(&f.allow, "allow-network", nil, "allow this address range inside a denied one; the most specific range "+
		"decides (repeatable or comma-separated; env "+allowNetworkEnv+")")
	fs.StringVar(&f.knownHosts, "ssh-known-hosts", "", "a known_hosts file whose lines apply to every SSH hop of every "+
		"connection: @cert-authority PATTERN KEY (host certificates that CA signed are accepted without pinning), "+
		"@revoked PATTERN KEY (never accepted) and plain host keys (env "+sshKnownHostsEnv+")")
}

// check reads the flags, or for flags not given their environment
// variables, and refuses them with a server: there the server's settings
// apply.
func (f *policyFlags) check(cmd *cobra.Command, getenv func(string) string, remote bool) error {
	fs := cmd.Root().PersistentFlags()
	if remote {
		for _, n := range []string{"host-key-policy", "deny-network", "allow-network", "ssh-known-hosts"} {
			if fs.Changed(n) {
				return usagef("--%s applies where connections are opened, and with --server (or %s) that is the server: "+
					"start it with `pgrelay serve --%s ...` instead", n, serverEnv, n)
			}
		}
		return nil
	}
	name := f.hostKeyPolicy
	if !fs.Changed("host-key-policy") {
		name = getenv(hostKeyPolicyEnv)
	}
	policy, err := app.ParseHostKeyPolicy(name)
	if err != nil {
		return usagef("--host-key-policy (or %s): %v", hostKeyPolicyEnv, err)
	}
	deny, err := prefixFlag(fs, "deny-network", f.deny, getenv(denyNetworkEnv), denyNetworkEnv)
	if err != nil {
		return err
	}
	allow, err := prefixFlag(fs, "allow-network", f.allow, getenv(allowNetworkEnv), allowNetworkEnv)
	if err != nil {
		return err
	}
	network, err := egress.New(deny, allow)
	if err != nil {
		return usagef("--deny-network and --allow-network: %v", err)
	}
	f.policy, f.network = policy, network
	file := f.knownHosts
	if !fs.Changed("ssh-known-hosts") {
		file = getenv(sshKnownHostsEnv)
	}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return usagef("--ssh-known-hosts (or %s): %v", sshKnownHostsEnv, err)
		}
		lines, err := sshkey.ParseKnownHostsFile(data)
		if err != nil {
			return usagef("--ssh-known-hosts %s: %v", file, err)
		}
		f.trust = sshkey.HostTrust{Lines: lines}
	}
	return nil
}

// prefixFlag reads a list of address ranges from a flag, or when it is not
// given from its environment variable (comma-separated).
func prefixFlag(fs *pflag.FlagSet, name string, values []string, env, envName string) ([]netip.Prefix, error) {
	source := "--" + name
	if !fs.Changed(name) {
		values, source = strings.Split(env, ","), envName
	}
	ps, err := egress.ParsePrefixes(values)
	if err != nil {
		return nil, usagef("%s: %s", source, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return ps, nil
}
