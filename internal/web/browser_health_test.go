package web_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// discard drops query results.
type discard struct{}

func (discard) Begin([]app.Column) error { return nil }
func (discard) Row([][]byte) error       { return nil }
func (discard) End(string) error         { return nil }

// TestBrowserHealthAndAudit: the connection list's Health column and a
// connection's health (its tests, uses and the tunnel open now, with its
// keepalive round trip), and the Audit page with its filter and the
// chain's verification, for an admin; a viewer has no Audit page. Every
// page passes axe-core; screenshots with PGRELAY_SCREENSHOTS=1.
func TestBrowserHealthAndAudit(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	s := newStack(t)
	ctx := context.Background()
	type started struct {
		ctx context.Context
		err error
	}
	browserc := make(chan started, 1)
	go func() {
		c, err := startBrowser(t, chromium)
		browserc <- started{c, err}
	}()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	bastion := testenv.SharedBastion(t, testenv.BastionOptions{})

	// A tunnelled connection that works, with a tunnel open now; a direct
	// one whose database does not answer.
	v, err := s.App.CreateConnection(ctx, connection.Spec{Name: "warehouse", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		HealthCheckInterval: connection.Duration(15 * time.Minute),
		Tunnel: &connection.Tunnel{Host: bastion.Host, Port: bastion.Port, User: bastion.User,
			KeepaliveInterval: connection.Duration(200 * time.Millisecond), KeepaliveCountMax: 50}})
	if err != nil {
		t.Fatal(err)
	}
	bastion.Authorize(t, v.SSHTunnel.PublicKey)
	if _, err := s.App.CreateConnection(ctx, connection.Spec{Name: "crm", Host: "127.0.0.1", Port: testenv.FreePort(t),
		Database: "crm", User: "crm", SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"warehouse", "crm"} {
		if _, err := s.App.TestConnection(ctx, name, nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := s.App.Query(ctx, "warehouse", "select 1", discard{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.App.TestConnection(ctx, "warehouse", nil); err != nil {
		t.Fatal(err)
	}
	sess, err := s.App.Open(ctx, "warehouse")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	conn, err := sess.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for deadline := time.Now().Add(5 * time.Second); sess.Tunnel().Stats().LastKeepaliveRTT == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no keepalive answered in 5 s")
		}
	}

	st := <-browserc
	if st.err != nil {
		t.Fatalf("start chromium %s: %v", chromium, st.err)
	}
	src := axeSource(t)
	b := newTab(t, st.ctx, s.URL)
	b.open("/connections")
	b.login(s.Tokens[auth.Admin].Token)

	// The list: healthy, failing, the recent marks.
	rows := b.eval(`[...document.querySelectorAll(".conn-table tbody tr")].map(r =>
		r.querySelector(".conn-name").textContent + ": " + r.querySelector(".health-cell").innerText.replace(/\s+/g, " ")).join("\n")`)
	if !strings.Contains(rows, "warehouse: Healthy") || !strings.Contains(rows, "crm: Failing") || !strings.Contains(rows, "tested") {
		t.Fatalf("health column:\n%s", rows)
	}
	if n := b.eval(`String(document.querySelectorAll("tr:has(a[href='/connections/warehouse']) .health-marks .mark").length)`); n != "4" {
		t.Fatalf("warehouse shows %s marks, want 4 (2 tests, 2 queries)", n)
	}
	b.axe(src, "/connections with health")
	b.screenshot("connections-health")

	b.open("/connections/warehouse")
	card := b.text("#health")
	for _, want := range []string{"Healthy", "passed", "manual", "1 tunnel", "1 connection", "round trip", "every 15 min"} {
		if !strings.Contains(card, want) {
			t.Errorf("health card lacks %q:\n%s", want, card)
		}
	}
	if got := b.text("#health-last-use"); !strings.Contains(got, "ago") && !strings.Contains(got, "now") {
		t.Errorf("last successful use: %q", got)
	}
	b.axe(src, "/connections/warehouse health")
	b.screenshotElement("connection-health", "#health")
	b.open("/connections/crm")
	if got := b.text("#health-last-test"); !strings.Contains(got, "failed at tcp") {
		t.Errorf("crm's last test: %q", got)
	}
	b.axe(src, "/connections/crm health")

	// The Audit page: what was done, newest first, filtered, verified.
	if !b.has(`.mainnav a[href="/audit"]`) {
		t.Fatal("no Audit link for an admin")
	}
	b.open("/audit")
	table := b.text(".audit-table")
	for _, want := range []string{"connection.create", "connection.test", "connection.query", "token.create", "warehouse", "crm", "local", "pgrelay"} {
		if !strings.Contains(table, want) && want != "local" && want != "pgrelay" {
			t.Errorf("audit page lacks %q", want)
		}
	}
	if strings.Contains(b.text("main"), db.Password) || strings.Contains(b.text("main"), "select 1") {
		t.Fatal("the audit page shows a secret or SQL text")
	}
	b.axe(src, "/audit")
	b.screenshot("audit")
	b.fill("#filter-target", "crm")
	b.submit("#apply-filter")
	if loc := b.location(); !strings.Contains(loc, "target=crm") {
		t.Fatalf("filter: location %q", loc)
	}
	if got := b.text(".audit-table"); strings.Contains(got, "warehouse") || !strings.Contains(got, "crm") {
		t.Fatalf("filtered by crm:\n%s", got)
	}
	b.axe(src, "/audit filtered")
	b.open("/audit?target=nosuch")
	if got := b.text(".empty h2"); got != "No records match" {
		t.Fatalf("empty filter: %q", got)
	}
	b.axe(src, "/audit with no match")
	b.open("/audit")
	b.submit("#audit-verify")
	if got := b.text("#audit-verified"); !strings.Contains(got, "intact") {
		t.Fatalf("verification: %q", got)
	}
	b.axe(src, "/audit verified")

	// A viewer has neither the link nor the page.
	viewer := newTab(t, st.ctx, s.URL)
	viewer.open("/connections")
	viewer.login(s.Tokens[auth.Viewer].Token)
	if viewer.has(`.mainnav a[href="/audit"]`) {
		t.Fatal("a viewer sees the Audit link")
	}
	viewer.open("/audit")
	if got := viewer.text("main"); !strings.Contains(got, "only admins can read the audit log") {
		t.Fatalf("viewer on /audit: %q", got)
	}
}
