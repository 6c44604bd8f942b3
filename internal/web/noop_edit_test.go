package web_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// formFields returns what a browser without script submits for the form
// with id formID in page (the fields as rendered, no button pressed).
func formFields(t *testing.T, page, formID string) url.Values {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	attr := func(n *html.Node, k string) (string, bool) {
		for _, a := range n.Attr {
			if a.Key == k {
				return a.Val, true
			}
		}
		return "", false
	}
	text := func(n *html.Node) string {
		var b strings.Builder
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			if c.Type == html.TextNode {
				b.WriteString(c.Data)
			}
		}
		return b.String()
	}
	var form *html.Node
	var find func(*html.Node)
	find = func(n *html.Node) {
		if n.Type == html.ElementNode && n.DataAtom == atom.Form {
			if id, _ := attr(n, "id"); id == formID {
				form = n
				return
			}
		}
		for c := n.FirstChild; c != nil && form == nil; c = c.NextSibling {
			find(c)
		}
	}
	find(doc)
	if form == nil {
		t.Fatalf("no form %q on the page", formID)
	}
	out := url.Values{}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.DataAtom == atom.Template {
			return // inert: the script copies it
		}
		if n.Type == html.ElementNode {
			name, named := attr(n, "name")
			_, disabled := attr(n, "disabled")
			if named && !disabled {
				switch n.DataAtom {
				case atom.Input:
					typ, _ := attr(n, "type")
					v, _ := attr(n, "value")
					switch typ {
					case "submit", "button", "image", "reset", "file":
					case "checkbox", "radio":
						if _, on := attr(n, "checked"); on {
							if v == "" {
								v = "on"
							}
							out.Add(name, v)
						}
					default:
						// Browsers drop line breaks from a text input's value.
						out.Add(name, strings.NewReplacer("\r", "", "\n", "").Replace(v))
					}
				case atom.Textarea:
					out.Add(name, text(n))
				case atom.Select:
					var first, chosen *html.Node
					var opts func(*html.Node)
					opts = func(o *html.Node) {
						for c := o.FirstChild; c != nil; c = c.NextSibling {
							if c.Type == html.ElementNode && c.DataAtom == atom.Option {
								if first == nil {
									first = c
								}
								if _, sel := attr(c, "selected"); sel {
									chosen = c
								}
							}
							opts(c)
						}
					}
					opts(n)
					if chosen == nil {
						chosen = first
					}
					if chosen != nil {
						v, ok := attr(chosen, "value")
						if !ok {
							v = text(chosen)
						}
						out.Add(name, v)
					}
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(form)
	return out
}

// hostKeyLine is the public key of a new ed25519 key, as a host key.
func hostKeyLine(t *testing.T) string {
	t.Helper()
	p, err := sshkey.Generate(sshkey.Ed25519, "")
	if err != nil {
		t.Fatal(err)
	}
	return sshkey.AuthorizedKey(p.Public, "")
}

// testServiceAccountKey is a service-account key file with a real RSA key.
func testServiceAccountKey(t *testing.T, email string) string {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "proj", "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": email, "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
	})
	return string(b)
}

// sameRecord reports the fields of two stored connections that differ,
// but for what every save changes (UpdatedAt, Version).
func sameRecord(t *testing.T, what string, before, after *store.Connection) {
	t.Helper()
	b, a := *before, *after
	b.UpdatedAt, a.UpdatedAt, b.Version, a.Version = time.Time{}, time.Time{}, 0, 0
	b.Spec, a.Spec = b.Spec.Clone(), a.Spec.Clone()
	for _, s := range []*connection.Spec{&b.Spec, &a.Spec} {
		// "" and key are the same login method (the view shows both as absent).
		if s.Tunnel != nil && s.Tunnel.Auth == "" {
			s.Tunnel.Auth = connection.SSHAuthKey
		}
	}
	bv, av := reflect.ValueOf(b), reflect.ValueOf(a)
	for i := range bv.NumField() {
		f := bv.Type().Field(i).Name
		if f == "Spec" {
			bs, as := reflect.ValueOf(b.Spec), reflect.ValueOf(a.Spec)
			for j := range bs.NumField() {
				if x, y := bs.Field(j).Interface(), as.Field(j).Interface(); !reflect.DeepEqual(x, y) {
					xj, _ := json.Marshal(x)
					yj, _ := json.Marshal(y)
					t.Errorf("%s changed Spec.%s: %s, was %s", what, bs.Type().Field(j).Name, yj, xj)
				}
			}
			continue
		}
		if x, y := bv.Field(i).Interface(), av.Field(i).Interface(); !reflect.DeepEqual(x, y) {
			t.Errorf("%s changed %s: %v, was %v", what, f, y, x)
		}
	}
}

// TestConnectionEditFormNoOp saves the edit form of connections with every
// optional setting as the page renders it, without changing anything:
// the stored record must stay as it was, field by field (secrets, keys,
// pins and a key rotation under way included).
func TestConnectionEditFormNoOp(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	allow, err := jobs.NewAllowlist([]string{"sh"})
	if err != nil {
		t.Fatal(err)
	}
	s.App.SetProxyCommands(jobs.CommandPolicy{Allow: allow})
	if _, err := s.App.InitSSHCA(ctx); err != nil {
		t.Fatal(err)
	}
	ca := strings.TrimSpace(string(testenv.NewTLSCert(t).CAPEM))
	saEmail := "etl@proj.iam.gserviceaccount.com"
	cases := []struct {
		name   string
		spec   connection.Spec
		rotate bool
	}{
		{name: "chain", rotate: true, spec: connection.Spec{Flavor: connection.AlloyDB, Host: "10.0.0.5", Port: 6543,
			Database: "analytics", User: "dbt", Password: secret.New("pw-1"), SSLMode: connection.SSLVerifyFull, SSLRootCert: ca,
			RequireAuth: "scram-sha-256", Schema: "marts", Role: "transform", Threads: 9,
			HealthCheckInterval: connection.Duration(20 * time.Minute),
			Tunnel: &connection.Tunnel{Host: "bastion-a.internal", Port: 2222, User: "jump", KeyType: "ed25519",
				KeepaliveInterval: connection.Duration(45 * time.Second), KeepaliveCountMax: 4,
				KnownHost: hostKeyLine(t), ProxyCommand: []string{"sh", "-c", "exec socat STDIO TCP:bastion-a.internal:22"},
				Auth:            connection.SSHAuthCertificate,
				HostAuthorities: []string{"@cert-authority *.internal " + hostKeyLine(t), "@revoked * " + hostKeyLine(t)},
				Next: []connection.Hop{
					{Host: "bastion-b.internal", Port: 22, User: "u2", KnownHost: hostKeyLine(t), OwnKey: true},
					{Host: "bastion-c.internal", Port: 2200, User: "u3", KnownHost: hostKeyLine(t)},
				}}}},
		{name: "command", spec: connection.Spec{Host: "db.internal", Database: "analytics", User: "dbt",
			SSLMode: connection.SSLRequire, Pooler: connection.PoolerTransaction, Threads: 2,
			Auth: &connection.Auth{Kind: connection.AuthCommand, Program: "/usr/local/bin/db-token", Args: []string{"--role", "etl x"},
				Timeout: connection.Duration(45 * time.Second), Lifetime: connection.Duration(20 * time.Minute)}}},
		{name: "command-empty-arg", spec: connection.Spec{Host: "db.internal", Database: "analytics", User: "dbt",
			SSLMode: connection.SSLRequire,
			Auth:    &connection.Auth{Kind: connection.AuthCommand, Program: "db-token", Args: []string{"--scope", "", "  spaced  "}}}},
		{name: "command-multiline-arg", spec: connection.Spec{Host: "db.internal", Database: "analytics", User: "dbt",
			SSLMode: connection.SSLRequire,
			Auth:    &connection.Auth{Kind: connection.AuthCommand, Program: "db-token", Args: []string{"[x]", "a\nb"}}}},
		{name: "proxy-empty-word", spec: connection.Spec{Host: "db.internal", Database: "analytics", User: "dbt",
			Tunnel: &connection.Tunnel{Host: "bastion-a.internal", User: "jump", ProxyCommand: []string{"sh", "/opt/proxy.sh", "", "bastion-a.internal"}}}},
		{name: "proxy-nbsp", spec: connection.Spec{Host: "db.internal", Database: "analytics", User: "dbt",
			Tunnel: &connection.Tunnel{Host: "bastion-a.internal", User: "jump", ProxyCommand: []string{"sh", "-c", "exec\u00a0nc"}}}},
		{name: "lakebase-endpoint", spec: connection.Spec{Flavor: connection.Lakebase, Host: "ep.database.cloud.databricks.com",
			Database: "databricks_postgres", User: "sp", Pooler: connection.PoolerSession,
			Auth: &connection.Auth{Kind: connection.AuthLakebase, WorkspaceURL: "https://dbc-1.cloud.databricks.com", ClientID: "cid-1",
				ClientSecret: secret.New("cs-1"), Endpoint: "projects/p/branches/main/endpoints/ep",
				Lifetime: connection.Duration(30 * time.Minute)}}},
		{name: "lakebase-instance", spec: connection.Spec{Flavor: connection.Lakebase, Host: "inst.database.cloud.databricks.com",
			Database: "databricks_postgres", User: "sp",
			Auth: &connection.Auth{Kind: connection.AuthLakebase, WorkspaceURL: "https://dbc-1.cloud.databricks.com", ClientID: "cid-1",
				ClientSecret: secret.New("cs-1"), Instance: "my-instance"}}},
		{name: "alloydb-iam", spec: connection.Spec{Flavor: connection.AlloyDB, Host: "10.0.0.6", Database: "analytics",
			User: connection.AlloyDBUser(saEmail),
			Auth: &connection.Auth{Kind: connection.AuthAlloyDBIAM, ServiceAccountKey: secret.New(testServiceAccountKey(t, saEmail)),
				Scope: "https://www.googleapis.com/auth/cloud-platform"}}},
	}
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	rc, err := remote.Dial(s.URL, s.Tokens[auth.Editor].Token)
	if err != nil {
		t.Fatal(err)
	}
	// Each face saves the connection as it shows it, unchanged.
	faces := []struct {
		name string
		save func(t *testing.T, name string)
	}{
		{"web form", func(t *testing.T, name string) {
			page := c.get("/connections/" + name + "/edit")
			if page.Status != http.StatusOK {
				t.Fatalf("edit page: %d", page.Status)
			}
			f := formFields(t, page.Body, "conn-form")
			// A problem in one field brings the form back with everything
			// else as it was typed.
			bad := url.Values{}
			for k, v := range f {
				bad[k] = slices.Clone(v)
			}
			bad.Set("threads", "many")
			r := c.post("/connections/"+name+"/edit", bad)
			if r.Status != http.StatusUnprocessableEntity {
				t.Fatalf("save with a bad field: %d\n%s", r.Status, r.Body)
			}
			if back := formFields(t, r.Body, "conn-form"); !reflect.DeepEqual(back, bad) {
				for k := range maps.Keys(bad) {
					if !slices.Equal(back[k], bad[k]) {
						t.Errorf("the form came back with %s = %q, typed %q", k, back[k], bad[k])
					}
				}
				for k := range maps.Keys(back) {
					if _, ok := bad[k]; !ok {
						t.Errorf("the form came back with %s = %q, not typed", k, back[k])
					}
				}
			}
			if r := c.post("/connections/"+name+"/edit", f); r.Status != http.StatusSeeOther {
				t.Fatalf("save unchanged: %d\n%s", r.Status, r.Body)
			}
		}},
		// `pgrelay connection update NAME` locally and against a server:
		// the spec of the view, given back.
		{"app", func(t *testing.T, name string) {
			v, err := s.App.GetConnection(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.App.UpdateConnection(ctx, name, v.Spec(), nil); err != nil {
				t.Fatal(err)
			}
		}},
		{"api", func(t *testing.T, name string) {
			v, err := rc.GetConnection(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rc.UpdateConnection(ctx, name, v.Spec(), nil); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, face := range faces {
		for _, tc := range cases {
			name := tc.name + "-" + strings.ReplaceAll(face.name, " ", "-")
			t.Run(face.name+"/"+tc.name, func(t *testing.T) {
				spec := tc.spec.Clone()
				spec.Name = name
				if _, err := s.App.CreateConnection(ctx, spec); err != nil {
					t.Fatal(err)
				}
				if tc.rotate {
					if _, err := s.App.RotateKeyStart(ctx, name, 0); err != nil {
						t.Fatal(err)
					}
				}
				before, err := s.store.GetConnection(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				face.save(t, name)
				after, err := s.store.GetConnection(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				sameRecord(t, face.name+": saving unchanged", before, after)
			})
		}
	}
}

// TestJobEditFormNoOp saves the edit form of jobs with every optional
// setting as the page renders it (in the mode it opens in), without
// changing anything: the stored job must stay as it was.
func TestJobEditFormNoOp(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	addConnection(t, s, "wh")
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	full := jobs.Job{Connection: "wh", Schedule: "30 2 * * 1-5", Timeout: connection.Duration(150 * time.Minute),
		TargetSchema: "marts", Profile: "analytics", Target: "prod", Retries: 3, StopGrace: connection.Duration(45 * time.Second),
		Steps: []jobs.Step{
			{Name: "refresh", SQL: "refresh materialized view daily_sales"},
			{Name: "build", Command: []string{"dbt", "build", "--select", "tag:nightly"}, Workdir: "/srv/dbt"},
		}}
	cases := []struct {
		name string
		job  jobs.Job
	}{
		{"full", full},
		{"defaults", jobs.Job{Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}}},
		{"yaml-only", jobs.Job{Connection: "wh", Steps: []jobs.Step{{Command: []string{"psql", "-c", ""}}}}},
		{"blank-arg", jobs.Job{Connection: "wh", Steps: []jobs.Step{{Command: []string{"printf", "%s", " "}}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j := tc.job
			j.Name = tc.name
			if _, _, err := s.App.PutJob(ctx, j); err != nil {
				t.Fatal(err)
			}
			before, err := s.App.GetJob(ctx, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			page := c.get("/jobs/" + tc.name + "/edit")
			if page.Status != http.StatusOK {
				t.Fatalf("edit page: %d", page.Status)
			}
			f := formFields(t, page.Body, "job-form")
			f.Set("op", "save")
			if f.Get("mode") == "form" {
				// A problem in one field brings the form back with
				// everything else as it was typed.
				bad := url.Values{}
				for k, v := range f {
					bad[k] = slices.Clone(v)
				}
				bad.Set("retries", "some")
				r := c.post("/jobs/"+tc.name+"/edit", bad)
				if r.Status != http.StatusUnprocessableEntity {
					t.Fatalf("save with a bad field: %d\n%s", r.Status, r.Body)
				}
				back := formFields(t, r.Body, "job-form")
				back.Set("op", "save")
				for k := range maps.Keys(bad) {
					if !slices.Equal(back[k], bad[k]) {
						t.Errorf("the form came back with %s = %q, typed %q", k, back[k], bad[k])
					}
				}
			}
			if r := c.post("/jobs/"+tc.name+"/edit", f); r.Status != http.StatusSeeOther {
				t.Fatalf("save unchanged: %d\n%s", r.Status, r.Body)
			}
			after, err := s.App.GetJob(ctx, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(before.Job, after.Job) {
				bj, _ := json.Marshal(before.Job)
				aj, _ := json.Marshal(after.Job)
				t.Errorf("saving the job form unchanged changed the job:\n%s\nwas\n%s", aj, bj)
			}
		})
	}
}
