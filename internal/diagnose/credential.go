package diagnose

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
)

// CredentialInfo is what the credential step learned; it never holds the
// token.
type CredentialInfo struct {
	// Kind is the connection's auth kind.
	Kind connection.AuthKind `json:"kind"`
	// Source describes where the token came from.
	Source string `json:"source"`
	// ExpiresAt is when the token stops being accepted for new logins.
	ExpiresAt time.Time `json:"expires_at"`
}

// credential runs the credential step: it fetches the token and makes it
// the password of the remaining steps.
func (r *runner) credential(ctx context.Context) bool {
	start := time.Now()
	src := r.in.Credential
	if src == nil {
		src = credential.New(r.spec, credential.Options{HTTPClient: credential.NetworkClient(nil, r.in.Network)})
	}
	timeout := r.in.StepTimeout
	if r.spec.AuthKind() == connection.AuthCommand && r.spec.Auth.Timeout.Duration() > timeout {
		timeout = r.spec.Auth.Timeout.Duration() + time.Second
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tok, err := src.Token(cctx)
	if err != nil {
		if errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			err = &StepTimeoutError{Step: StepCredential, After: timeout, Err: err}
		}
		r.fail(StepCredential, start, err, r.hintCredential(src, err))
		return false
	}
	r.spec.Password = tok.Value
	r.report.Credential = &CredentialInfo{Kind: src.Kind(), Source: src.Describe(), ExpiresAt: tok.ExpiresAt}
	detail := fmt.Sprintf("%s gave a token", src.Describe())
	if !tok.ExpiresAt.IsZero() {
		detail += fmt.Sprintf(" valid until %s (in %v)", tok.ExpiresAt.UTC().Format(time.RFC3339),
			time.Until(tok.ExpiresAt).Round(time.Second))
	}
	r.ok(StepCredential, start, detail, "")
	return true
}

// hintCredential is the fix of a failed fetch: the source's own hint,
// with what the connection is.
func (r *runner) hintCredential(src credential.Source, err error) string {
	if isTimeout(err) {
		var te *StepTimeoutError
		if errors.As(err, &te) {
			return fmt.Sprintf("No token from %s within %v: the source did not answer in time. Check that it is reachable "+
				"from this machine; pgrelay retries transient failures with backoff.", src.Describe(), te.After)
		}
	}
	if h := credential.Hint(err); h != "" {
		return h
	}
	return fmt.Sprintf("Fetching a token from %s failed: check the connection's auth settings.", src.Describe())
}

// hintTokenRefused is the hint of a 28P01 for a token credential: the
// token was fetched, and the database refused it.
func (r *runner) hintTokenRefused() string {
	user := r.spec.User
	switch r.spec.AuthKind() {
	case connection.AuthLakebase:
		return fmt.Sprintf("Databricks issued a credential, but the database refused it for user %q. The user must be the "+
			"service principal's client ID (application ID) and must have a Postgres role on the instance (created in the "+
			"Lakebase UI or with databricks_create_role); the credential is valid only for the instance or endpoint it was "+
			"requested for.", user)
	case connection.AuthAlloyDBIAM:
		sa := ""
		if r.spec.Auth != nil {
			sa = r.spec.Auth.ServiceAccount
		}
		return fmt.Sprintf("Google issued an access token, but AlloyDB refused it for user %q. Add the service account %s as an "+
			"IAM database user of the cluster (gcloud alloydb users create %s --cluster=CLUSTER --region=REGION --type=IAM_BASED), enable IAM authentication "+
			"(alloydb.iam_authentication flag), and give the account roles/alloydb.databaseUser; the user name is the email "+
			"without .gserviceaccount.com.", user, sa, connection.AlloyDBUser(sa))
	}
	return fmt.Sprintf("The command gave a token, but the database refused it as the password of user %q: check that the "+
		"command prints a token for this user and this database, and that it is not already expired.", user)
}

// hintTokenCleartext is the hint when a server asks for the token in clear
// text (as Lakebase and AlloyDB do: they must read it to check it) over a
// hop whose certificate pgrelay does not verify.
func (r *runner) hintTokenCleartext() string {
	var how string
	switch r.spec.Flavor {
	case connection.Lakebase:
		how = "Lakebase's certificates are signed by public CAs: " + r.updateAdvice("sslmode", "verify-full") + "."
	case connection.AlloyDB:
		how = "AlloyDB signs its server certificates with a CA of the cluster: download it (gcloud alloydb clusters describe " +
			"CLUSTER --region=REGION, or the console's connection page) and use " + r.updateAdvice("sslmode", "verify-ca") +
			" with that CA certificate."
	default:
		how = "Verify the server: " + r.updateAdvice("sslmode", "verify-full") + " with its CA certificate."
	}
	return fmt.Sprintf("The server asked for the token in clear text (inside TLS, as providers that check tokens do), and pgrelay "+
		"does not verify this server's certificate (sslmode=%s), so a machine in the middle could read the token and use it until "+
		"it expires: pgrelay refused and sent nothing. %s Or accept it knowingly: %s.",
		r.spec.SSLMode, how, r.updateAdvice("require-auth", "password,scram-sha-256"))
}
