// Package wellknown lets cistern's resolver verify refnet handles.
//
// refnet's handles live under .test, which has no DNS and no HTTPS server;
// the reference PDS answers https://{handle}/.well-known/atproto-did
// itself, by the Host header, over plain http on loopback. Transport sends
// those requests there, so that the default resolver (resolver.Cached, with
// SkipDNSDomainSuffixes ".test") checks handles both ways exactly as it
// would on the real network. It is test scaffolding for e2e only.
package wellknown

import (
	"net/http"
	"net/url"
	"strings"
)

// Transport returns a RoundTripper that sends GET
// https://{host under .test}/.well-known/atproto-did to the PDS at pds
// (such as http://localhost:2583) with Host set to that host, and every
// other request through base (http.DefaultTransport when nil).
func Transport(pds string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	u, err := url.Parse(pds)
	return roundTripper{pds: u, ok: err == nil, base: base}
}

type roundTripper struct {
	pds  *url.URL
	ok   bool
	base http.RoundTripper
}

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Hostname()
	if !rt.ok || req.URL.Path != "/.well-known/atproto-did" || !strings.HasSuffix(host, ".test") {
		return rt.base.RoundTrip(req)
	}
	out := req.Clone(req.Context())
	out.URL.Scheme, out.URL.Host = rt.pds.Scheme, rt.pds.Host
	out.Host = host
	return rt.base.RoundTrip(out)
}
