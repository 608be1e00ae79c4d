package httpapi

import (
	_ "embed"
	"net/http"
)

// statusPage is the status page: one self-contained HTML document (inline
// CSS, JavaScript and SVG; no external script, font or image) that reads
// status.json, relative to its own URL, every 5 seconds. It draws every
// value from the server as text (textContent, setAttribute), never as
// HTML, so that a host name or DID with markup in it shows as written.
//
//go:embed status.html
var statusPage []byte

func serveStatusPage(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// Only its own inline script and style, and requests to its own origin.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(statusPage)
}
