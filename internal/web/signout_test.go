package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/auth"
)

// sessionCookie returns the session cookie the client holds.
func (c *client) sessionCookie(base string) *http.Cookie {
	c.t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, ck := range c.hc.Jar.Cookies(u) {
		if ck.Name == auth.SessionCookie {
			return ck
		}
	}
	c.t.Fatal("the client holds no session cookie")
	return nil
}

// replay sends a request with only the given session cookie, as someone
// who copied it would, and returns the status and Location.
func replay(t *testing.T, method, url, cookie string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: cookie})
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	return res.StatusCode, res.Header.Get("Location")
}

// TestSignOutEndsSessionOnServer: after signing out, a copy of the session
// cookie (kept from before) is refused by the pages (sent to sign in) and
// by the API (401), while another session of the same token goes on.
func TestSignOutEndsSessionOnServer(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	tok := s.Tokens[auth.Editor].Token
	c := s.client(t)
	c.mustLogin(tok)
	other := s.client(t)
	other.mustLogin(tok)
	copied := c.sessionCookie(s.URL).Value
	if st, _ := replay(t, http.MethodGet, s.URL+"/connections", copied); st != http.StatusOK {
		t.Fatalf("the copied cookie before signing out: %d, want 200", st)
	}
	if st, _ := replay(t, http.MethodGet, s.URL+"/api/v1/whoami", copied); st != http.StatusOK {
		t.Fatalf("the copied cookie on the API before signing out: %d, want 200", st)
	}

	if r := c.post("/logout", url.Values{auth.CSRFField: {c.csrf("/connections")}}); r.Status != http.StatusSeeOther {
		t.Fatalf("sign out: %d", r.Status)
	}
	st, loc := replay(t, http.MethodGet, s.URL+"/connections", copied)
	if st != http.StatusSeeOther || !strings.HasPrefix(loc, "/login") {
		t.Fatalf("the copied cookie after signing out: %d %q, want a redirect to /login", st, loc)
	}
	if st, _ := replay(t, http.MethodGet, s.URL+"/api/v1/whoami", copied); st != http.StatusUnauthorized {
		t.Fatalf("the copied cookie on the API after signing out: %d, want 401", st)
	}
	if r := other.get("/connections"); r.Status != http.StatusOK {
		t.Fatalf("another session of the token after one signed out: %d, want 200", r.Status)
	}
}
