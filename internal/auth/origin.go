package auth

import (
	"fmt"
	"net/http"
	"net/url"
)

// OriginProtection returns the cross-origin check for requests that use the
// session cookie to change something (http.CrossOriginProtection: the
// browser's Sec-Fetch-Site, else Origin against Host). publicURL, when not
// nil, is the URL people reach the server at; its origin is trusted too, so
// that browsers that send no Sec-Fetch-Site still pass behind a proxy that
// rewrites the Host header.
func OriginProtection(publicURL *url.URL) (*http.CrossOriginProtection, error) {
	cop := http.NewCrossOriginProtection()
	if publicURL != nil {
		origin := publicURL.Scheme + "://" + publicURL.Host
		if err := cop.AddTrustedOrigin(origin); err != nil {
			return nil, fmt.Errorf("trust the origin of the public URL %s: %w", origin, err)
		}
	}
	return cop, nil
}
