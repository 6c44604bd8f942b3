package app_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/credential/credentialtest"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// TestTokenFetchNetworkPolicy: the HTTPS requests that fetch Lakebase and
// AlloyDB tokens dial under the network policy, like bastions and
// databases: a workspace URL whose name resolves to a denied address
// (localhost → 127.0.0.1, ::1) and a key whose token_uri is a denied IP
// literal are refused at the dial, before anything is sent, in the
// connection test (saved and draft) and when a session logs in, with the
// field, the address and the rule named, the client secret nowhere, and
// no retries. The same servers serve a service whose policy allows them.
func TestTokenFetchNetworkPolicy(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := credentialtest.NewDatabricks(t, nil)
	google := credentialtest.NewGoogle(t, nil)
	key := google.NewKey(t, alloySA, true)
	pool := x509.NewCertPool()
	pool.AddCert(db.Srv.Certificate())
	pool.AddCert(google.Srv.Certificate())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	u, err := url.Parse(db.Srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	// A name, so that only the check of the resolved address can refuse
	// it; the database itself (never reached) is on an allowed address.
	workspace := "https://localhost:" + u.Port()
	base := connection.Spec{Host: "127.0.0.2", Port: 5432, Database: "postgres", SSLMode: connection.SSLVerifyFull, SSLRootCert: testCA(t)}
	lb := base
	lb.Name, lb.Flavor, lb.User = "lb", connection.Lakebase, lakeRole
	lb.Auth = &connection.Auth{Kind: connection.AuthLakebase, WorkspaceURL: workspace, ClientID: db.ClientID,
		ClientSecret: secret.New(db.ClientSecret), Instance: db.Instance}
	ad := base
	ad.Name, ad.Flavor, ad.User = "ad", connection.AlloyDB, alloyRole
	ad.Auth = &connection.Auth{Kind: connection.AuthAlloyDBIAM, ServiceAccountKey: secret.New(key)}

	f := newServiceWith(t, func(c *app.Config) {
		denying(t, "127.0.0.1/32", "::1/128")(c)
		c.Credentials = app.CredentialConfig{HTTPClient: client}
	})
	for _, c := range []struct {
		spec   connection.Spec
		field  string
		source string
	}{
		{lb, "auth.workspace_url", "lakebase"},
		{ad, "auth.service_account_key (its token_uri)", "alloydb-iam"},
	} {
		if _, err := f.svc.CreateConnection(ctx, c.spec); err != nil {
			t.Fatal(err)
		}
		check := func(what, msg string, more ...string) {
			t.Helper()
			for _, want := range append([]string{c.field, "pgrelay's network policy", "127.0.0.1/32",
				"--deny-network"}, more...) {
				if !strings.Contains(msg, want) {
					t.Errorf("%s %s: %q lacks %q", c.spec.Name, what, msg, want)
				}
			}
			if strings.Contains(msg, db.ClientSecret) {
				t.Errorf("%s %s: the client secret is in %q", c.spec.Name, what, msg)
			}
		}
		rep, err := f.svc.TestConnection(ctx, c.spec.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		fail := rep.Failed()
		if fail == nil || fail.ID != diagnose.StepCredential {
			t.Fatalf("%s: test of a token endpoint the policy denies: %+v", c.spec.Name, rep.Steps)
		}
		check("test", fail.Error)
		check("test hint", fail.Hint, "nothing was sent")

		draft := c.spec.Clone()
		rep, err = f.svc.TestDraft(ctx, draft, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if fail := rep.Failed(); fail == nil || fail.ID != diagnose.StepCredential {
			t.Fatalf("%s: draft test: %+v", c.spec.Name, rep.Steps)
		} else {
			check("draft test", fail.Error)
		}

		err = selectOne(ctx, f.svc, c.spec.Name)
		wantDenied(t, c.spec.Name+" login", err, "127.0.0.1", "127.0.0.1/32", "--deny-network 127.0.0.1/32")
		var nd *credential.NetworkDeniedError
		if !errors.As(err, &nd) || credential.Transient(err) {
			t.Errorf("%s login: %v (%T), want a NetworkDeniedError that is not retried", c.spec.Name, err, err)
		} else {
			check("login", err.Error())
		}
		if n := fetches(t, f.metrics, c.source, "network_denied"); n == 0 {
			t.Errorf("%s: no fetch counted with outcome network_denied", c.spec.Name)
		}
	}
	if n, m := db.Count(credential.LakebaseTokenPath), google.Count(); n != 0 || m != 0 {
		t.Fatalf("the denied token endpoints got %d and %d requests, want none", n, m)
	}

	// Allowed, the same endpoints answer (the database is not there: the
	// credential step passes and the test goes on).
	open := newServiceWith(t, func(c *app.Config) { c.Credentials = app.CredentialConfig{HTTPClient: client} })
	adOpen := ad
	rep, err := open.svc.TestDraft(ctx, adOpen, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := rep.Step(diagnose.StepCredential); st == nil || st.Status != diagnose.StatusOK {
		t.Fatalf("allowed token endpoint: %+v", rep.Steps)
	}
}
