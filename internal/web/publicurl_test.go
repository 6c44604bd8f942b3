package web_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/auth"
)

// rawSignIn signs in without a cookie jar (which would not send Secure
// cookies over plain HTTP, as a TLS-terminating proxy's backend sees
// them) and returns the Set-Cookie line of the session and its value.
func rawSignIn(t *testing.T, base, token string) (setCookie, value string) {
	t.Helper()
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := hc.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	var nonce *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == "pgrelay_login" {
			nonce = c
		}
	}
	m := csrfRE.FindStringSubmatch(string(body))
	if nonce == nil || m == nil {
		t.Fatalf("the sign-in page has no nonce cookie or CSRF field (%d)", res.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/login", strings.NewReader(url.Values{auth.CSRFField: {m[1]}, "token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: nonce.Name, Value: nonce.Value})
	res, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	for _, line := range res.Header.Values("Set-Cookie") {
		if strings.HasPrefix(line, auth.SessionCookie+"=") {
			for _, c := range res.Cookies() {
				if c.Name == auth.SessionCookie {
					return line, c.Value
				}
			}
		}
	}
	t.Fatalf("sign-in set no session cookie (%d)", res.StatusCode)
	return "", ""
}

// cookieWrite sends a cookie-authenticated change from a browser that sends
// Origin but no Sec-Fetch-Site, through a proxy that passes the backend's
// own address as Host: first a page form, then an API call. It returns
// both statuses.
func cookieWrite(t *testing.T, base, cookie, origin, name string) (page, apiStatus int) {
	t.Helper()
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get, _ := http.NewRequest(http.MethodGet, base+"/new", nil)
	get.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: cookie})
	res, err := hc.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	m := csrfRE.FindStringSubmatch(string(body))
	if m == nil {
		t.Fatalf("GET /new with the session: %d, no CSRF field", res.StatusCode)
	}
	form := validForm(name + "-page")
	form.Set(auth.CSRFField, m[1])
	for i, r := range []*http.Request{
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, base+"/connections", strings.NewReader(form.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}(),
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, base+"/api/v1/connections",
				strings.NewReader(`{"name":"`+name+`-api","host":"db.internal","database":"d","user":"u"}`))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set(auth.CSRFHeader, m[1])
			return r
		}(),
	} {
		r.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: cookie})
		r.Header.Set("Origin", origin)
		res, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if i == 0 {
			page = res.StatusCode
		} else {
			apiStatus = res.StatusCode
		}
	}
	return page, apiStatus
}

// TestPublicURLBehindProxy: with `serve --public-url https://...` (a
// TLS-terminating proxy in front), the cookies are Secure although the
// server itself speaks plain HTTP, and a browser's change from the public
// origin passes the cross-origin check although the proxy passes another
// Host; other origins are still refused. Without the public URL, the same
// change is refused (the Host does not match the Origin).
func TestPublicURLBehindProxy(t *testing.T) {
	t.Parallel()
	const public = "https://pgrelay.example.com"
	s := newStackWith(t, stackOptions{PublicURL: mustURL(t, public)})
	line, cookie := rawSignIn(t, s.URL, s.Tokens[auth.Editor].Token)
	if !strings.Contains(line, "; Secure") || !strings.Contains(line, "HttpOnly") {
		t.Fatalf("session Set-Cookie behind an https public URL: %q, want Secure", line)
	}
	if page, apiStatus := cookieWrite(t, s.URL, cookie, public, "from-public"); page != http.StatusSeeOther || apiStatus != http.StatusCreated {
		t.Fatalf("a change from the public origin: page %d, API %d; want 303 and 201", page, apiStatus)
	}
	if page, apiStatus := cookieWrite(t, s.URL, cookie, "https://evil.example", "from-evil"); page != http.StatusForbidden || apiStatus != http.StatusForbidden {
		t.Fatalf("a change from another origin: page %d, API %d; want 403 and 403", page, apiStatus)
	}

	direct := newStack(t)
	line, cookie = rawSignIn(t, direct.URL, direct.Tokens[auth.Editor].Token)
	if strings.Contains(line, "Secure") {
		t.Fatalf("session Set-Cookie over plain HTTP without a public URL: %q, want no Secure", line)
	}
	if page, apiStatus := cookieWrite(t, direct.URL, cookie, public, "no-public"); page != http.StatusForbidden || apiStatus != http.StatusForbidden {
		t.Fatalf("without a public URL, a change from an origin that is not the Host: page %d, API %d; want 403 and 403", page, apiStatus)
	}
}
