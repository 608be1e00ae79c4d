package resolvertest

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/resolver"
)

// Directory is a fake identity network on a loopback httptest server: a PLC
// directory (GET /{did}), did:web documents (GET /.well-known/did.json on
// the DID's host) and HTTPS handle resolution (GET /.well-known/atproto-did
// on the handle's host). Requests for any host reach it through Client.
//
// It is safe for concurrent use. The server is closed when the test ends.
type Directory struct {
	srv *httptest.Server

	mu       sync.Mutex
	docs     map[syntax.DID][]byte
	handles  map[syntax.Handle]syntax.DID
	requests map[string]int // DID or handle -> requests served
	gate     chan struct{}  // when not nil, document requests wait for it to close
	hgate    chan struct{}  // when not nil, handle requests wait for it to close
	down     bool           // answer every request with 503
}

// NewDirectory starts an empty Directory.
func NewDirectory(t testing.TB) *Directory {
	d := &Directory{
		docs:     make(map[syntax.DID][]byte),
		handles:  make(map[syntax.Handle]syntax.DID),
		requests: make(map[string]int),
	}
	d.srv = httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(d.srv.Close)
	return d
}

// URL is the PLC directory URL, for resolver.Options.PLCURL.
func (d *Directory) URL() string { return d.srv.URL }

// Client returns an HTTP client that sends every request, whatever its
// scheme and host, to the directory (keeping the Host header), so that
// did:web and HTTPS handle resolution reach it. Use it with handles and
// did:web hosts under a TLD that does not resolve by DNS, such as ".test",
// and resolver.Options.SkipDNSDomainSuffixes.
func (d *Directory) Client() *http.Client {
	return &http.Client{Transport: rewriteTransport{base: d.srv.Client().Transport, addr: d.srv.Listener.Addr().String()}}
}

type rewriteTransport struct {
	base http.RoundTripper
	addr string
}

func (rt rewriteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Host = req.URL.Host
	r.URL.Scheme = "http"
	r.URL.Host = rt.addr
	return rt.base.RoundTrip(r)
}

// Put publishes ident: its DID document (handle in alsoKnownAs, signing
// key as a Multikey #atproto verification method, PDS as the #atproto_pds
// service) and, unless the handle is empty or "handle.invalid", the handle's
// resolution to ident.DID. A handle the DID had before stops resolving.
func (d *Directory) Put(ident *resolver.Identity) {
	doc := Document(ident)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.unlinkLocked(ident.DID)
	d.docs[ident.DID], _ = json.Marshal(doc)
	if h := ident.Handle.Normalize(); h != "" && !h.IsInvalidHandle() {
		d.handles[h] = ident.DID
	}
}

// PutDocument publishes a DID document as given, and changes no handle.
func (d *Directory) PutDocument(doc identity.DIDDocument) {
	b, _ := json.Marshal(doc)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.docs[doc.DID] = b
}

// SetHandle makes h resolve to did (or, with did empty, not resolve).
func (d *Directory) SetHandle(h syntax.Handle, did syntax.DID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if did == "" {
		delete(d.handles, h.Normalize())
		return
	}
	d.handles[h.Normalize()] = did
}

// Remove unpublishes did's document and the handles that resolve to it:
// both answer 404 from now on.
func (d *Directory) Remove(did syntax.DID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.unlinkLocked(did)
	delete(d.docs, did)
}

func (d *Directory) unlinkLocked(did syntax.DID) {
	for h, x := range d.handles {
		if x == did {
			delete(d.handles, h)
		}
	}
}

// Requests returns how many requests for key (a DID's document, or a
// handle's resolution) the directory has received.
func (d *Directory) Requests(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.requests[key]
}

// Hold makes DID document requests wait until release is called (or the
// request is cancelled). Calling release more than once is harmless.
func (d *Directory) Hold() (release func()) { return d.hold(&d.gate) }

// HoldHandles makes handle requests (/.well-known/atproto-did) wait until
// release is called (or the request is cancelled): a handle domain that
// hangs. Calling release more than once is harmless.
func (d *Directory) HoldHandles() (release func()) { return d.hold(&d.hgate) }

func (d *Directory) hold(slot *chan struct{}) (release func()) {
	gate := make(chan struct{})
	d.mu.Lock()
	*slot = gate
	d.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			d.mu.Lock()
			if *slot == gate {
				*slot = nil
			}
			d.mu.Unlock()
			close(gate)
		})
	}
}

// SetDown makes every request fail with 503 Service Unavailable while down
// is true: a directory that cannot answer, as opposed to one that says "not
// found".
func (d *Directory) SetDown(down bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.down = down
}

func (d *Directory) serve(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var key string
	var doc bool
	switch {
	case strings.HasPrefix(r.URL.Path, "/did:"):
		key, doc = strings.TrimPrefix(r.URL.Path, "/"), true
	case r.URL.Path == "/.well-known/did.json":
		key, doc = "did:web:"+host, true
	case r.URL.Path == "/.well-known/atproto-did":
		key = string(syntax.Handle(host).Normalize())
	default:
		http.NotFound(w, r)
		return
	}

	d.mu.Lock()
	d.requests[key]++
	gate, down := d.gate, d.down
	if !doc {
		gate = d.hgate
	}
	d.mu.Unlock()
	if down {
		http.Error(w, "directory unavailable", http.StatusServiceUnavailable)
		return
	}
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if doc {
		b, ok := d.docs[syntax.DID(key)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/did+ld+json")
		w.Write(b)
		return
	}
	did, ok := d.handles[syntax.Handle(key)]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(did.String()))
}

// Document builds the DID document that describes ident: handle as
// "at://{handle}" in alsoKnownAs (omitted when empty or "handle.invalid"),
// the signing key as a Multikey "#atproto" verification method (omitted
// when nil), and the PDS as the "#atproto_pds" service (omitted when empty).
func Document(ident *resolver.Identity) identity.DIDDocument {
	doc := identity.DIDDocument{DID: ident.DID}
	if h := ident.Handle; h != "" && !h.IsInvalidHandle() {
		doc.AlsoKnownAs = []string{"at://" + h.String()}
	}
	if ident.SigningKey != nil {
		doc.VerificationMethod = []identity.DocVerificationMethod{{
			ID:                 ident.DID.String() + "#atproto",
			Type:               "Multikey",
			Controller:         ident.DID.String(),
			PublicKeyMultibase: ident.SigningKey.Multibase(),
		}}
	}
	if ident.PDS != "" {
		doc.Service = []identity.DocService{{
			ID:              "#atproto_pds",
			Type:            "AtprotoPersonalDataServer",
			ServiceEndpoint: ident.PDS,
		}}
	}
	return doc
}
