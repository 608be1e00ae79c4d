package httpapi

import (
	"crypto/subtle"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The management guard. A management request passes these checks in order:
//
//  1. Origin: a request that carries an Origin header (every browser
//     request that is not a plain navigation) must come from the server's
//     own origin or from one listed in Options.AllowedOrigins. This stops
//     a cross-site page from posting to the API.
//  2. Authentication: a correct "Authorization: Bearer <token>" (the
//     scheme in any case), or Basic "admin:<password>" when
//     Options.AdminPassword is set, authenticates the request. Without one, a
//     mutating call (any method but GET and HEAD) is refused: 401 when a
//     token is configured, 403 when none is. A read is served without
//     the token only to a loopback client, and then only when no token is
//     configured or Options.LoopbackReads is set.
//  3. Host: a read served without the token must name a local host in
//     its Host header (localhost, *.localhost, an IP address) or one of
//     Options.AllowedHosts. This stops DNS rebinding, where a page on
//     attacker.example makes its own name resolve to 127.0.0.1.
//  4. Content type: a mutating call must declare a JSON body
//     (application/json or any */*+json), which no HTML form can send
//     without the browser asking first.

// isMutating reports whether a method changes state.
func isMutating(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

// bearerToken returns the credentials of an "Authorization: Bearer <token>"
// header; the scheme is matched without regard to case (RFC 9110, 11.1).
func bearerToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// credentialsConfigured reports whether a token or a password is set.
func (s *Server) credentialsConfigured() bool {
	return s.opts.AdminToken != "" || s.opts.AdminPassword != ""
}

// authorized reports whether r carries the configured admin token, or the
// admin password as Basic auth "admin:<password>", compared in constant
// time.
func (s *Server) authorized(r *http.Request) bool {
	if s.opts.AdminToken != "" {
		if tok, ok := bearerToken(r.Header.Get("Authorization")); ok &&
			subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.AdminToken)) == 1 {
			return true
		}
	}
	if s.opts.AdminPassword != "" {
		if user, pass, ok := r.BasicAuth(); ok && user == "admin" &&
			subtle.ConstantTimeCompare([]byte(pass), []byte(s.opts.AdminPassword)) == 1 {
			return true
		}
	}
	return false
}

// originAllowed reports whether the Origin header of r, if any, is the
// server's own origin or an allowed one.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false // "null" (sandboxed frames, file://) and garbage
	}
	if strings.EqualFold(u.Host, r.Host) && s.hostAllowed(r.Host) {
		return true
	}
	return slices.ContainsFunc(s.opts.AllowedOrigins, func(o string) bool {
		return strings.EqualFold(strings.TrimSuffix(o, "/"), origin)
	})
}

// hostAllowed reports whether a Host header names this machine (an IP
// address, localhost or a name under .localhost) or an allowed host.
func (s *Server) hostAllowed(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.ToLower(strings.Trim(name, "[]")), ".")
	if name == "" {
		return false
	}
	if net.ParseIP(name) != nil || name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	return slices.ContainsFunc(s.opts.AllowedHosts, func(a string) bool {
		return strings.EqualFold(a, name) || strings.EqualFold(a, host)
	})
}

// jsonContentType reports whether a Content-Type header declares JSON.
func jsonContentType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// Admin wraps h with the management access rule (see Options.AdminToken):
// a foreign Origin is refused (403 CrossOriginRefused); a mutating call
// needs the admin token (401 AuthenticationRequired, or 403 Forbidden when
// no token is configured) and a JSON body (415 UnsupportedMediaType); a
// read needs the token, or, when no token is configured or
// Options.LoopbackReads is set, a loopback client (403 Forbidden) whose
// Host header names this machine (403 ForeignHost). Host applications use
// it to protect pages of their own, such as a status page.
func (s *Server) Admin(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.originAllowed(r) {
			writeError(w, http.StatusForbidden, "CrossOriginRefused",
				"requests from another origin are refused on management endpoints (Origin "+truncate(r.Header.Get("Origin"), 100)+")")
			return
		}
		switch {
		case s.authorized(r):
		case isMutating(r.Method) && !s.credentialsConfigured():
			writeError(w, http.StatusForbidden, "Forbidden",
				"management calls that change state need an admin token, and none is configured")
			return
		case isMutating(r.Method) || (s.credentialsConfigured() && !s.opts.LoopbackReads):
			w.Header().Add("WWW-Authenticate", `Bearer realm="cistern"`)
			msg := "this endpoint needs Authorization: Bearer <admin token>"
			if s.opts.AdminPassword != "" {
				w.Header().Add("WWW-Authenticate", `Basic realm="cistern"`)
				msg += " or Basic admin:<admin password>"
			}
			writeError(w, http.StatusUnauthorized, "AuthenticationRequired", msg)
			return
		case !isLoopback(r.RemoteAddr):
			writeError(w, http.StatusForbidden, "Forbidden",
				"without the admin token, management endpoints answer loopback clients only")
			return
		case !s.hostAllowed(r.Host):
			writeError(w, http.StatusForbidden, "ForeignHost",
				"the Host header "+truncate(r.Host, 100)+" does not name this server; use 127.0.0.1, localhost or the admin token")
			return
		}
		if isMutating(r.Method) && !jsonContentType(r.Header.Get("Content-Type")) {
			writeError(w, http.StatusUnsupportedMediaType, "UnsupportedMediaType",
				"management calls that change state take Content-Type: application/json")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// isLoopback reports whether a remote address ("host:port") is a loopback
// address.
func isLoopback(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// truncate shortens s to at most n bytes for an error message, quoting it.
func truncate(s string, n int) string {
	if len(s) <= n {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:n]) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}
