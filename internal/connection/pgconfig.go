package connection

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultConnectTimeout bounds each connection attempt to the database.
const DefaultConnectTimeout = 10 * time.Second

// ApplicationName is sent to the server as application_name.
const ApplicationName = "pgrelay"

// quoteValue quotes a libpq keyword/value connection string value.
func quoteValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `\'`)
	return "'" + v + "'"
}

// PgxConfig returns the pgx configuration for the spec: host, port, database,
// user, password, TLS per sslmode (with the spec's CA for verify-*). It does
// not read PG* environment variables' values for fields the spec sets, and
// never puts the password in a connection string. The caller sets DialFunc
// and LookupFunc to go through a tunnel.
func (s *Spec) PgxConfig() (*pgx.ConnConfig, error) {
	connString := strings.Join([]string{
		"host=" + quoteValue(s.Host),
		"port=" + strconv.Itoa(s.Port),
		"dbname=" + quoteValue(s.Database),
		"user=" + quoteValue(s.User),
		"sslmode=disable",
		// Set so that PGSSLROOTCERT and PGSSLNEGOTIATION are not read: TLS
		// comes from the spec alone, and its config is for the
		// PostgreSQL-style SSLRequest handshake.
		"sslrootcert=''",
		"sslnegotiation=postgres",
		"connect_timeout=" + strconv.Itoa(int(DefaultConnectTimeout/time.Second)),
		"application_name=" + quoteValue(ApplicationName),
		"target_session_attrs=any",
	}, " ")
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("connection %s: build config: %w", s.Name, err)
	}
	cfg.Password = s.Password.Reveal()
	maps.Copy(cfg.RuntimeParams, StartupParams(s))
	s.applyPooler(cfg)
	// Set after parsing, so that PGREQUIREAUTH is not read either.
	cfg.RequireAuth = s.EffectiveRequireAuth()
	tlsCfg, err := s.TLSConfig()
	if err != nil {
		return nil, fmt.Errorf("connection %s: %w", s.Name, err)
	}
	cfg.TLSConfig = nil
	cfg.Fallbacks = nil
	switch s.SSLMode {
	case SSLDisable:
	case SSLAllow:
		cfg.Fallbacks = []*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port, TLSConfig: tlsCfg}}
	case SSLPrefer:
		cfg.TLSConfig = tlsCfg
		cfg.Fallbacks = []*pgconn.FallbackConfig{{Host: cfg.Host, Port: cfg.Port}}
	default:
		cfg.TLSConfig = tlsCfg
	}
	return cfg, nil
}

// TLSConfig returns the TLS configuration for the spec's sslmode, or nil for
// disable. Like libpq, allow/prefer/require encrypt without verifying the
// server; verify-ca checks the chain; verify-full checks chain and host name.
func (s *Spec) TLSConfig() (*tls.Config, error) {
	if s.SSLMode == SSLDisable {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if !s.SSLMode.Verifies() {
		// libpq semantics: encryption without authentication of the server.
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	var roots *x509.CertPool
	if s.SSLRootCert != "" {
		certs, err := ParseCertificates(s.SSLRootCert)
		if err != nil {
			return nil, fmt.Errorf("ssl_root_cert: %w", err)
		}
		roots = x509.NewCertPool()
		for _, c := range certs {
			roots.AddCert(c)
		}
	} else {
		sys, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("load system CA certificates: %w", err)
		}
		roots = sys
	}
	if s.SSLMode == SSLVerifyFull {
		cfg.RootCAs = roots
		cfg.ServerName = s.Host
		return cfg, nil
	}
	// verify-ca: check the chain, not the host name.
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("server sent no certificate")
		}
		opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		return nil
	}
	return cfg, nil
}

// StartupParams are the startup parameters the spec's sessions log in
// with besides user and database: the role, when set (the server sets it
// at login, and the name is never part of SQL).
func StartupParams(s *Spec) map[string]string {
	if s.Role == "" {
		return nil
	}
	return map[string]string{"role": s.Role}
}

// OptionSets reports whether a client's options startup parameter (as
// libpq's PGOPTIONS, e.g. "-c role=x") sets the parameter name: such a
// client chose it itself, and the server would apply a startup parameter
// of the same name after the options, overriding its choice.
func OptionSets(options, name string) bool {
	args := optionArgs(options)
	for i, a := range args {
		var setting string
		switch {
		case a == "-c" && i+1 < len(args):
			setting = args[i+1]
		case strings.HasPrefix(a, "--"):
			setting = a[2:]
		case strings.HasPrefix(a, "-c"):
			setting = a[2:]
		default:
			continue
		}
		k, _, ok := strings.Cut(setting, "=")
		if ok && strings.EqualFold(strings.ReplaceAll(k, "-", "_"), name) {
			return true
		}
	}
	return false
}

// optionArgs splits an options startup parameter as the server does:
// at unescaped white space, a backslash taking the next character as it
// is.
func optionArgs(options string) []string {
	var args []string
	var cur strings.Builder
	inArg, escaped := false, false
	for _, c := range options {
		switch {
		case escaped:
			cur.WriteRune(c)
			escaped = false
		case c == '\\':
			escaped, inArg = true, true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}
