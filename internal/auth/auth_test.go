package auth_test

import (
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/auth"
)

func TestRoles(t *testing.T) {
	t.Parallel()
	cases := []struct {
		role auth.Role
		can  map[auth.Action]bool
	}{
		{auth.Admin, map[auth.Action]bool{auth.Read: true, auth.Write: true, auth.Use: true, auth.ManageTokens: true, auth.ReadAudit: true}},
		{auth.Editor, map[auth.Action]bool{auth.Read: true, auth.Write: true, auth.Use: true, auth.ManageTokens: false, auth.ReadAudit: false}},
		{auth.Viewer, map[auth.Action]bool{auth.Read: true, auth.Write: false, auth.Use: false, auth.ManageTokens: false, auth.ReadAudit: false}},
		{auth.Role("root"), map[auth.Action]bool{auth.Read: false, auth.Write: false, auth.Use: false, auth.ManageTokens: false, auth.ReadAudit: false}},
	}
	for _, c := range cases {
		for a, want := range c.can {
			if got := c.role.Can(a); got != want {
				t.Errorf("%s.Can(%s) = %v, want %v", c.role, a, got, want)
			}
		}
	}
	if r, err := auth.ParseRole(" Editor "); err != nil || r != auth.Editor {
		t.Errorf("ParseRole: %v %v", r, err)
	}
	if _, err := auth.ParseRole("owner"); err == nil || !strings.Contains(err.Error(), "admin, editor or viewer") {
		t.Errorf("ParseRole(owner): %v", err)
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	a, ha, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := auth.NewToken()
	if a == b || !auth.LooksLikeToken(a) || auth.HashToken(a) != ha || strings.Contains(ha, a) {
		t.Fatalf("tokens %q %q hash %q", a, b, ha)
	}
	for _, s := range []string{"", "pgr_", "pgr_short", "xyz_" + a[4:], a + "x"} {
		if auth.LooksLikeToken(s) {
			t.Errorf("LooksLikeToken(%q) = true", s)
		}
	}
}

func newSessions(t testing.TB, now *time.Time) *auth.Sessions {
	s, err := auth.NewSessions([]byte(strings.Repeat("k", 32)), func() time.Time { return *now })
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSessions(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newSessions(t, &now)
	v := s.Issue("tok1", time.Hour)
	if id, err := s.Verify(v); err != nil || id != "tok1" {
		t.Fatalf("verify: %q %v", id, err)
	}
	if strings.Contains(v, "pgr_") {
		t.Fatal("session carries a token")
	}
	csrf := s.CSRFToken(v)
	if !s.CheckCSRF(v, csrf) || s.CheckCSRF(v, "") || s.CheckCSRF(s.Issue("tok2", time.Hour), csrf) {
		t.Fatal("CSRF binding broken")
	}
	other, _ := auth.NewSessions([]byte(strings.Repeat("x", 32)), nil)
	if _, err := other.Verify(v); err == nil {
		t.Fatal("a session from another key verified")
	}
	for _, forged := range []string{"", "tok1", "tok2." + strings.SplitN(v, ".", 2)[1], v + "x", strings.Replace(v, "tok1", "tok2", 1)} {
		if _, err := s.Verify(forged); err == nil {
			t.Errorf("forged session %q verified", forged)
		}
	}
	now = now.Add(2 * time.Hour)
	if _, err := s.Verify(v); err == nil {
		t.Fatal("expired session verified")
	}
	if _, err := auth.NewSessions([]byte("short"), nil); err == nil {
		t.Fatal("short key accepted")
	}
}

// FuzzVerify: arbitrary cookie values never panic and never verify.
func FuzzVerify(f *testing.F) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := newSessions(f, &now)
	f.Add(s.Issue("tok1", time.Hour))
	f.Add("a.b.c")
	f.Add("..")
	f.Add("tok1.99999999999999999999.x")
	f.Fuzz(func(t *testing.T, v string) {
		id, err := s.Verify(v)
		if err == nil && v != s.Issue(id, time.Hour) {
			// Only values this key issued may verify; Issue is
			// deterministic for a fixed clock and ttl.
			parts := strings.Split(v, ".")
			if len(parts) != 3 || parts[0] != id {
				t.Fatalf("%q verified as %q", v, id)
			}
		}
		_ = s.CheckCSRF(v, v)
	})
}
