package cli

import (
	"net"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestFlagValueNames: no flag's help shows words of its description as
// its value's name. pflag takes the first `back-quoted` words of a usage
// text as that name, so `--host-key-policy` once read
// "--host-key-policy pgrelay connection trust-host-key".
func TestFlagValueNames(t *testing.T) {
	t.Parallel()
	r := &runner{env: Env{Getenv: func(string) string { return "" }}}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		check := func(f *pflag.Flag) {
			if name, _ := pflag.UnquoteUsage(f); strings.ContainsAny(name, " `") {
				t.Errorf("%s --%s: its help shows %q as the value's name", c.CommandPath(), f.Name, name)
			}
		}
		c.LocalFlags().VisitAll(check)
		c.PersistentFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(r.rootCommand())
}

// TestRunCancelHelpSignals: run cancel's help names the signals a stopped
// command step gets in the order the runner sends them (SIGINT first, as
// the README says); it said "SIGTERM, then SIGKILL".
func TestRunCancelHelpSignals(t *testing.T) {
	t.Parallel()
	r := &runner{env: Env{Getenv: func(string) string { return "" }}}
	cmd, _, err := r.rootCommand().Find([]string{"run", "cancel"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "SIGINT, then SIGTERM and SIGKILL"; !strings.Contains(cmd.Short, want) {
		t.Errorf("run cancel: %q does not say %q", cmd.Short, want)
	}
}

// TestConnValue: the proxy's "Connect with" line quotes what libpq would
// otherwise split (a database named with a space used to break it).
func TestConnValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"analytics": "analytics", "my db": "'my db'", "o'neil": `'o\'neil'`, "": "''", `a\b`: `'a\\b'`} {
		if got := connValue(in); got != want {
			t.Errorf("connValue(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestProxyAddress: the proxy prints the address as it was given (with the
// port bound for port 0), and tells clients a host they can connect to: a
// wildcard is reached at loopback of its family.
func TestProxyAddress(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		listen string
		bound  net.Addr
		shown  string
		host   string
	}{
		{"0.0.0.0:6546", &net.TCPAddr{IP: net.IPv4zero, Port: 6546}, "0.0.0.0:6546", "127.0.0.1"},
		{"0.0.0.0:0", &net.TCPAddr{IP: net.IPv4zero, Port: 40001}, "0.0.0.0:40001", "127.0.0.1"},
		{"[::]:6546", &net.TCPAddr{IP: net.IPv6unspecified, Port: 6546}, "[::]:6546", "::1"},
		{":6546", &net.TCPAddr{IP: net.IPv6unspecified, Port: 6546}, ":6546", "127.0.0.1"},
		{"127.0.0.1:0", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40002}, "127.0.0.1:40002", "127.0.0.1"},
		{"[::1]:6546", &net.TCPAddr{IP: net.IPv6loopback, Port: 6546}, "[::1]:6546", "::1"},
		{"localhost:6546", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 6546}, "localhost:6546", "localhost"},
	} {
		shown, host, port := proxyAddress(c.listen, c.bound)
		_, wantPort, _ := net.SplitHostPort(c.bound.String())
		if shown != c.shown || host != c.host || port != wantPort {
			t.Errorf("proxyAddress(%q, %s) = %s, %s, %s; want %s, %s, %s", c.listen, c.bound, shown, host, port, c.shown, c.host, wantPort)
		}
	}
}

// TestRedactURL: a store URL is shown without its password, wherever the
// URL holds it.
func TestRedactURL(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"postgres://u:s3cret@db/pgrelay", "postgres://u@db/pgrelay?password=s3cret&sslmode=require",
		"postgresql://db/pgrelay?sslpassword=s3cret"} {
		if got := redactURL(in); strings.Contains(got, "s3cret") || !strings.Contains(got, "db") {
			t.Errorf("redactURL(%q) = %q", in, got)
		}
	}
}
