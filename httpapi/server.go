package httpapi

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/jetstream"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/tapcompat"
)

// DefaultMaxBodyBytes is the request body limit when Options.MaxBodyBytes
// is zero: 1 MiB.
const DefaultMaxBodyBytes = 1 << 20

// Options configure a Server. Zero values mean the defaults.
type Options struct {
	// AdminToken is the bearer token of the management API, sent as
	// "Authorization: Bearer <token>" (the scheme in any case). Every
	// management call that changes state needs it: with no token
	// configured, those calls are refused. Reads (GET /repos, /filter,
	// /stats, /metrics) need it too unless LoopbackReads is set; with no
	// token configured they answer loopback clients only (by the
	// connection's remote address: behind a reverse proxy on the same host
	// every client looks local, so set a token there). Read endpoints
	// (XRPC, /stream, /health) are public. See Admin for the whole rule.
	AdminToken string
	// LoopbackReads lets loopback clients read management endpoints (GET)
	// without the token, as they do when no token is configured. The
	// server binary sets it with a token it generated itself, so that the
	// status page opens in a local browser. Default false.
	LoopbackReads bool
	// AllowedHosts lists host names, besides localhost, *.localhost and IP
	// addresses, that a token-less management request may name in its Host
	// header (for a server reached by a local DNS name). Default none.
	AllowedHosts []string
	// AllowedOrigins lists browser origins ("https://admin.example"),
	// besides the server's own, allowed to call management endpoints.
	// Default none.
	AllowedOrigins []string
	// AdminPassword, when set, is also accepted on management endpoints as
	// HTTP Basic auth with the user "admin" (tap's TAP_ADMIN_PASSWORD),
	// beside the bearer AdminToken. With either set, loopback clients need
	// credentials too.
	AdminPassword string
	// Tap, when set, serves tap's protocol beside cistern's endpoints
	// (package tapcompat): /channel, /resolve/{did}, /info/{did} and
	// /stats/*, behind the management access rule, with its delivery
	// counters in /stats and /metrics. The host runs it (Service.Run).
	Tap *tapcompat.Service
	// MaxBodyBytes bounds request bodies; larger ones get 413.
	// Default DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int64
	// Logger receives request failures. Default: a logger that discards
	// everything.
	Logger *slog.Logger
	// Stream configures the /stream WebSocket endpoint.
	Stream StreamOptions
	// MaxStreams bounds concurrent /stream connections; one more is
	// refused with 503 {"error":"TooManyStreams",...} and Retry-After.
	// Default DefaultMaxStreams (1000); negative means no limit.
	MaxStreams int
	// Jetstream configures the Jetstream-compatible /subscribe endpoint.
	Jetstream jetstream.Options
}

func (o Options) withDefaults() Options {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.MaxStreams == 0 {
		o.MaxStreams = DefaultMaxStreams
	}
	return o
}

// Server is an http.Handler over an Indexer:
//
//	GET  /xrpc/com.atproto.repo.getRecord     repo (DID or handle), collection, rkey, cid?
//	GET  /xrpc/com.atproto.repo.listRecords   repo, collection, limit? (1-100, 50), cursor?, reverse?
//	GET  /xrpc/com.atproto.repo.describeRepo  repo
//	GET  /xrpc/com.atproto.sync.getRepoStatus did
//	GET  /xrpc/com.atproto.sync.listRepos     limit? (1-1000, 500), cursor?
//	GET  /xrpc/com.atproto.sync.getLatestCommit did
//	GET  /xrpc/dev.cistern.countRecords       repo, collection?
//	GET  /xrpc/dev.cistern.listCollection     collection, limit? (1-100, 50), cursor?
//	GET  /xrpc/dev.cistern.getRepoInfo        repo
//	GET  /stream                              WebSocket event stream (see StreamHandler)
//	GET  /subscribe                           Jetstream-compatible WebSocket (see package jetstream)
//	GET  /health
//
// and the management endpoints, which need the admin token (or a loopback
// client when no token is configured):
//
//	GET   /repos?state=&cursor=&limit=
//	GET   /repos/{did}
//	POST  /repos/add      {"dids":[...]}
//	POST  /repos/remove   {"dids":[...],"deleteData":bool}
//	POST  /repos/resync   {"dids":[...]}
//	GET   /filter
//	PUT   /filter         a FilterRequest (a filter.Spec and confirmDelete)
//	PATCH /filter         a filter.Patch (confirmDelete for a change that deletes records)
//	GET   /stats
//	GET   /metrics        Prometheus text format
//
// Every error is JSON, {"error":"Name","message":"..."}, with the status
// codes of the reference PDS for the XRPC methods: 400 for InvalidRequest,
// RecordNotFound and RepoNotFound, 501 for MethodNotImplemented, 500 for
// InternalServerError.
type Server struct {
	ix   *cistern.Indexer
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux

	xrpc        map[string]func(w http.ResponseWriter, r *http.Request) error
	stream      http.Handler
	subscribe   *jetstream.Handler
	subscribers atomic.Int64
	metrics     *collector
	gatherer    prometheus.Gatherer
}

var _ http.Handler = (*Server)(nil)

// New returns a Server over ix. It starts no goroutine; the caller serves it
// (for example with http.Server) and closes ix when done.
func New(ix *cistern.Indexer, opts Options) *Server {
	opts = opts.withDefaults()
	s := &Server{ix: ix, opts: opts, log: opts.Logger, mux: http.NewServeMux()}
	s.xrpc = s.xrpcMethods()
	s.stream = StreamHandler(ix, opts.Stream)
	s.subscribe = jetstream.New(ix, ix.Store(), opts.Jetstream)
	s.metrics = newCollector(ix, &s.subscribers)
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.metrics, s.subscribe,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if opts.Tap != nil {
		reg.MustRegister(opts.Tap.Collector())
	}
	s.gatherer = prometheus.Gatherers{ix.Gatherer(), reg}
	s.routes()
	return s
}

func (s *Server) routes() {
	s.mux.HandleFunc("/xrpc/{nsid}", s.serveXRPC)
	s.mux.Handle("GET /stream", http.HandlerFunc(s.serveStream))
	s.mux.Handle("GET /subscribe", s.subscribe)
	s.mux.HandleFunc("GET /health", s.serveHealth)

	admin := func(pattern string, h http.HandlerFunc) {
		s.mux.Handle(pattern, s.Admin(s.refuseIfReadOnly(pattern, h)))
	}
	admin("GET /repos", s.serveListRepos)
	admin("GET /repos/{did}", s.serveGetRepo)
	admin("POST /repos/add", s.serveAddRepos)
	admin("POST /repos/remove", s.serveRemoveRepos)
	admin("POST /repos/resync", s.serveResyncRepos)
	admin("GET /filter", s.serveGetFilter)
	admin("PUT /filter", s.servePutFilter)
	admin("PATCH /filter", s.servePatchFilter)
	admin("GET /stats", s.serveStats)
	admin("GET /metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{ErrorLog: nil}).ServeHTTP)
	if s.opts.Tap != nil {
		s.opts.Tap.Register(s.mux, s.Admin)
	}
}

// ServeHTTP routes a request. Unknown paths get 404 and a known path with
// the wrong method 405, both with a JSON error body.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	}
	if refuseUncleanPath(w, r) {
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		// The mux would answer 404 or 405 in plain text; answer in JSON.
		rec := &statusProbe{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusMethodNotAllowed {
			if allow := rec.header.Get("Allow"); allow != "" {
				w.Header().Set("Allow", allow)
			}
			writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", truncate(r.Method, 20)+" is not allowed on "+truncate(r.URL.Path, 200))
			return
		}
		writeError(w, http.StatusNotFound, "NotFound", "no endpoint at "+truncate(r.URL.Path, 200))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// statusProbe captures the status and headers the mux's own 404/405 handler
// would write.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(code int)        { p.status = code }

// CloseStreams ends every plain-HTTP /stream response (NDJSON, server-sent
// events), each with a last {"type":"error","error":"Unavailable"} object,
// and answers later ones with 503. Those responses last as long as the
// client reads, so http.Server.Shutdown would wait for them: register it
// with http.Server.RegisterOnShutdown. WebSocket streams are not affected
// (Shutdown does not wait for them; they end when the Indexer closes).
func (s *Server) CloseStreams() {
	if h, ok := s.stream.(*streamHandler); ok {
		h.closePlain()
	}
}

func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	n := s.subscribers.Add(1)
	defer s.subscribers.Add(-1)
	if s.opts.MaxStreams > 0 && n > int64(s.opts.MaxStreams) {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "TooManyStreams",
			fmt.Sprintf("the server has %d /stream connections open, as many as it allows; retry later", s.opts.MaxStreams))
		return
	}
	s.stream.ServeHTTP(w, r)
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	var newest uint64
	err := s.ix.Store().View(r.Context(), func(tx store.ReadTx) error {
		var err error
		_, newest, err = tx.EventBounds()
		return err
	})
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "Unavailable", "store: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "newestEvent": newest})
}
