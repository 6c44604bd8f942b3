package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/auth"
)

// TestCookieWritesRefuseCrossOrigin: a request that uses the session cookie
// to change something is refused when the browser marks it cross-origin,
// even with the right CSRF token; API tokens are not affected.
func TestCookieWritesRefuseCrossOrigin(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	admin := srv.Token(t, "origin-admin", auth.Admin)
	cookie, csrf := srv.Session(t, admin.ID)
	body := `{"name":"x","host":"db.internal","database":"d","user":"u"}`
	do := func(site string, useCookie bool) int {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/connections", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if site != "" {
			req.Header.Set("Sec-Fetch-Site", site)
		}
		if useCookie {
			req.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: cookie})
			req.Header.Set(auth.CSRFHeader, csrf)
		} else {
			req.Header.Set("Authorization", "Bearer "+admin.Token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := do("cross-site", true); got != http.StatusForbidden {
		t.Fatalf("cross-site cookie write: %d, want 403", got)
	}
	if got := do("same-origin", true); got != http.StatusCreated {
		t.Fatalf("same-origin cookie write: %d, want 201", got)
	}
	body = strings.Replace(body, `"x"`, `"y"`, 1)
	if got := do("cross-site", false); got != http.StatusCreated {
		t.Fatalf("cross-site bearer write: %d, want 201", got)
	}
}
