package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// DefaultMaxConnections is serve's --max-connections.
const DefaultMaxConnections = 512

// exposureFlags are serve's flags that bound what the server exposes and
// to whom: /metrics, connections and streams, the public URL, and where
// the first admin token goes.
type exposureFlags struct {
	metricsAddr             string
	metricsTokenFile        string
	metricsConnectionLabels bool
	maxConnections          int
	maxStreamsPerToken      int
	publicURL               string
	adminTokenFile          string
}

// register adds the flags to fs.
func (f *exposureFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve /metrics on this address instead of --listen (e.g. 127.0.0.1:9187; with the same TLS as --listen)")
	fs.StringVar(&f.metricsTokenFile, "metrics-token-file", "", "file holding a bearer token that /metrics requires (Prometheus: authorization.credentials_file)")
	fs.BoolVar(&f.metricsConnectionLabels, "metrics-connection-labels", false, "label the tunnel metrics and the token expiry gauge in /metrics by connection name (default: one series, no names)")
	intVar(fs, &f.maxConnections, "max-connections", DefaultMaxConnections, "at most this many client connections at once (per listener); more wait until one closes; 0 for no limit")
	intVar(fs, &f.maxStreamsPerToken, "max-streams-per-token", api.DefaultMaxStreamsPerToken, "at most this many live run event streams per API token (its web sessions included); more get 429")
	fs.StringVar(&f.publicURL, "public-url", "", "URL people reach this server at through a proxy, e.g. https://pgrelay.example.com: https makes cookies Secure and sends HSTS; its origin passes the cross-origin check")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "write the first admin token of a new store to this file (created with mode 0600; must not exist) instead of printing it")
}

// parsePublicURL checks --public-url: an http or https URL of a host, at
// the root.
func parsePublicURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	bad := func(why string) error {
		return usagef("--public-url %q: %s; accepted is the http(s) URL people open, without path, query or user, e.g. https://pgrelay.example.com or https://pgrelay.example.com:8443", shownURL(s), why)
	}
	switch {
	case err != nil:
		return nil, bad("not a URL")
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, bad("the scheme must be https or http")
	case u.Host == "" || u.Hostname() == "":
		return nil, bad("no host")
	case u.User != nil:
		return nil, bad("user information is not accepted")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.Opaque != "":
		return nil, bad("pgrelay is served at the root of its URL")
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// shownURL is s as an error may quote it: a password in its user
// information, and the value of a password or sslpassword parameter of its
// query (postgres://u@db/x?password=...), are replaced by "xxxxx", also
// when s does not parse.
func shownURL(s string) string {
	s = redactQueryPasswords(s)
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if at := strings.LastIndex(rest, "@"); ok && at >= 0 {
		return scheme + "://xxxxx" + rest[at:]
	}
	return s
}

// redactQueryPasswords replaces the values of the password and sslpassword
// parameters in the query of the URL s (names compared as decoded, in any
// case) by "xxxxx", leaving the rest as written. It works on the text, so
// that a URL that does not parse is redacted too.
func redactQueryPasswords(s string) string {
	base, query, ok := strings.Cut(s, "?")
	if !ok {
		return s
	}
	fragment := ""
	if q, f, ok := strings.Cut(query, "#"); ok {
		query, fragment = q, "#"+f
	}
	params := strings.Split(query, "&")
	for i, p := range params {
		key, _, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		name, err := url.QueryUnescape(key)
		if err != nil {
			name = key
		}
		if strings.EqualFold(name, "password") || strings.EqualFold(name, "sslpassword") {
			params[i] = key + "=xxxxx"
		}
	}
	return base + "?" + strings.Join(params, "&") + fragment
}

// readMetricsToken reads the token of --metrics-token-file.
func readMetricsToken(path string) (secret.Value, error) {
	if path == "" {
		return secret.Value{}, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return secret.Value{}, usagef("--metrics-token-file: %v", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 || strings.ContainsAny(tok, " \t\r\n") {
		return secret.Value{}, usagef("--metrics-token-file %s: the file must hold one token of at least 16 characters without spaces (e.g. from `openssl rand -hex 32`)", path)
	}
	return secret.New(tok), nil
}

// checkPrivateFiles refuses to serve when the master key file or the
// SQLite store (with its WAL files) can be read or written by the file's
// group or others: they hold the key to every secret, and the secrets
// sealed with it. pgrelay creates them with mode 0600; a looser mode comes
// from a copy, a restore or a chmod.
func (r *runner) checkPrivateFiles() error {
	type private struct{ path, holds string }
	var files []private
	if r.env.Getenv(secret.MasterKeyEnv) == "" {
		files = append(files, private{filepath.Join(r.dataDir, secret.MasterKeyFile), "the master key"})
	}
	if r.embeddedStore() {
		db := filepath.Join(r.dataDir, sqlite.FileName)
		files = append(files, private{db, "the store"}, private{db + "-wal", "the store's write-ahead log"},
			private{db + "-shm", "the store's shared memory index"})
	}
	var open, what []string
	for _, f := range files {
		fi, err := os.Stat(f.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // created with mode 0600
		}
		if err != nil {
			return fmt.Errorf("check the mode of %s: %w", f.path, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			open = append(open, f.path)
			what = append(what, fmt.Sprintf("%s (%s, mode %04o)", f.path, f.holds, fi.Mode().Perm()))
		}
	}
	if len(open) == 0 {
		return nil
	}
	return fmt.Errorf("refusing to serve: %s can be read or written by users other than its owner; fix it with\n    chmod 600 %s",
		strings.Join(what, ", "), strings.Join(open, " "))
}

// warnReadableKeyFile warns when the master key file PGRELAY_MASTER_KEY_FILE
// names can be read by users other than its owner: with it they open every
// stored secret. Unlike master.key in the data dir (checkPrivateFiles) it is
// not refused: such a file is often a mounted secret whose mode its
// platform sets (a Kubernetes Secret volume's defaultMode is 0644), in a
// container no other user shares.
func (r *runner) warnReadableKeyFile() {
	loc := r.keyLocation()
	if loc.Source() != secret.FromFileEnv {
		return
	}
	fi, err := os.Stat(loc.File)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return // a file that cannot be read fails with its own error
	}
	r.logger.Warn(fmt.Sprintf("the master key file %s=%s has mode %04o: users other than its owner may read it, and with it every stored secret; "+
		"chmod 600 %s (a Kubernetes Secret volume: defaultMode: 0400)", secret.MasterKeyFileEnv, loc.File, fi.Mode().Perm(), loc.File),
		"file", loc.File, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
}

// adminTokenOutput creates --admin-token-file for the first admin token
// when the store needs one. It returns nil when nothing is to be written
// (no flag, or the store has an active token already).
func (r *runner) adminTokenOutput(ctx context.Context, svc *app.Service, path string) (*os.File, error) {
	if path == "" {
		return nil, nil
	}
	need, err := svc.NeedsAdmin(ctx)
	if err != nil || !need {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, usagef("--admin-token-file %s exists: pgrelay does not overwrite it. The store has no API token yet, so a new admin token is to be written; remove the file (after reading any token it holds) or give another path", path)
	}
	if err != nil {
		return nil, usagef("--admin-token-file: %v", err)
	}
	return f, nil
}

// writeAdminToken writes the token to f and closes it; without a token
// (another process created one meanwhile), it removes f.
func writeAdminToken(f *os.File, nt *app.NewToken) error {
	if nt == nil {
		_ = f.Close()
		return os.Remove(f.Name())
	}
	_, werr := f.WriteString(nt.Token + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("write the admin token to %s: %w (revoke token %s with `pgrelay token revoke %s`, then restart to get another)",
			f.Name(), err, nt.ID, nt.ID)
	}
	return nil
}
