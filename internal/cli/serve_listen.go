package cli

import (
	"net"

	"github.com/spf13/cobra"
)

// Address of `pgrelay serve`.
const (
	// addrEnv sets serve's address when --listen is not given.
	addrEnv = "PGRELAY_ADDR"
	// defaultServeAddr is serve's address when neither is given.
	defaultServeAddr = "127.0.0.1:8080"
)

// addListenFlag gives serve its address flag: --listen, as for `pgrelay
// proxy`, with --addr (its former name) still accepted but not shown, and
// PGRELAY_ADDR as the address when neither is given. The address is
// checked before the command runs.
func (r *runner) addListenFlag(cmd *cobra.Command, addr *string) {
	fl := cmd.Flags()
	fl.StringVar(addr, "listen", defaultServeAddr, "address to listen on, host:port (env "+addrEnv+"); port 0 picks a free one")
	fl.StringVar(addr, "addr", defaultServeAddr, "the former name of --listen")
	_ = fl.MarkHidden("addr")
	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if prev != nil {
			if err := prev(cmd, args); err != nil {
				return err
			}
		}
		from := "--listen"
		switch {
		case cmd.Flags().Changed("listen") && cmd.Flags().Changed("addr"):
			return usagef("--listen and --addr are the same setting (--addr is its former name): give only --listen")
		case cmd.Flags().Changed("addr"):
			from = "--addr"
		case !cmd.Flags().Changed("listen"):
			if v := r.env.Getenv(addrEnv); v != "" {
				*addr, from = v, addrEnv
			}
		}
		if _, port, err := net.SplitHostPort(*addr); err != nil || !validPort(port) {
			return usagef("%s %q: accepted is host:port, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080 (port 0 picks a free one)", from, *addr)
		}
		return nil
	}
}
