// Package testnet is an in-process AT Protocol network for tests, benchmarks
// and demos: a PLC directory, one or more PDS hosts and a relay, all built
// from real protocol parts and served on 127.0.0.1 only.
//
// Accounts hold real signed MST repos built with indigo's atproto/repo and
// atproto/repo/mst, signed with K-256 keys. Every change made through the Go
// API (records, handles, account status) is emitted by the relay as the
// frame a real network would send: #commit with sync 1.1 prevData, per-op
// prev CIDs and a CAR of the signed commit, the MST diff and the new
// records; #identity; #account; #sync. The PDS hosts serve the sync and repo
// XRPC methods an indexer needs (getRepo streamed as a CAR, getRepoStatus,
// getLatestCommit, listRepos, getRecord, describeRepo, listRecords) with the
// reference PDS's error names and status codes.
//
// Faults are injected by tests: rate limits (429 with Retry-After and
// RateLimit-Reset), 5xx answers, slow and truncated getRepo bodies, dropped
// firehose connections, and corrupted #commit frames (see Fault). A faulty
// commit changes the account's real repo like a good one would; only the
// frame is corrupted, so an indexer that rejects it and resyncs from getRepo
// reaches the true state.
//
// A test starts a network with New, which closes it on t.Cleanup:
//
//	net := testnet.New(t)
//	alice := net.Account(t, "alice.test", testnet.Records("app.bsky.feed.post", 50))
//	alice.CreateRecord("app.bsky.feed.post", testnet.Post("app.bsky.feed.post", "hi"))
//
// Binaries use Start and Close. Account creation emits #identity, #account
// and #sync for the new empty repo, then initial records as #commit frames
// of at most 200 ops. Bulk generation (Network.Generate) emits nothing.
//
// To point a cistern Indexer at a network, use cisterntest.Config(net,
// path), or copy the fields of Network.IndexerSettings (RelayURL, PLCURL,
// SkipHandleVerification, and an HTTP client that refuses any host outside
// the network) into a cistern.Config: left unset, RelayURL and PLCURL mean
// the production network. A network lives as long as its process; to test
// a service across its own restarts, run the network as a separate process
// (examples/testnet, see package cisterntest).
package testnet

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Options configure a Network. The zero value is valid.
type Options struct {
	// Hosts is the number of PDS hosts. Default 1.
	Hosts int
	// Addr, if set, is a host:port on which the PLC directory, the relay
	// and the first PDS host share one HTTP server, routed by path: PLC at
	// paths starting with "/did:", the relay's subscribeRepos, listRepos and
	// listReposByCollection, and every other /xrpc/ path to the PDS. Other
	// hosts get their own listeners. Default: each service listens on its
	// own 127.0.0.1 port.
	Addr string
	// Retention is how many frames the relay keeps for cursor replay.
	// Default DefaultRetention (131072).
	Retention int
	// Seed makes DIDs and keys deterministic when non-zero. Default 0: a
	// random seed.
	Seed uint64
	// Logger receives the network's own diagnostics. Default: discard.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Hosts <= 0 {
		o.Hosts = 1
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// Option changes one field of Options, for New.
type Option func(*Options)

// WithHosts sets the number of PDS hosts (default 1).
func WithHosts(n int) Option { return func(o *Options) { o.Hosts = n } }

// WithRetention sets how many frames the relay keeps for replay.
func WithRetention(n int) Option { return func(o *Options) { o.Retention = n } }

// WithSeed makes DIDs and keys deterministic.
func WithSeed(seed uint64) Option { return func(o *Options) { o.Seed = seed } }

// WithLogger sets the network's logger.
func WithLogger(l *slog.Logger) Option { return func(o *Options) { o.Logger = l } }

// Network is a running simulated AT network: one PLC directory, one relay
// and Options.Hosts PDS hosts. It is safe for concurrent use.
type Network struct {
	opts  Options
	log   *slog.Logger
	relay *Relay
	hosts []*Host
	plc   counters

	plcURL, relayURL string
	servers          []*http.Server
	serveWG          sync.WaitGroup

	mu       sync.RWMutex
	accounts map[syntax.DID]*Account
	order    []syntax.DID // sorted, for paging
	nextUser int

	rngMu sync.Mutex
	rng   *rand.Rand
	tidMu sync.Mutex
	tids  *syntax.TIDClock

	loadMu sync.Mutex
	loads  map[*Load]struct{}

	closeOnce sync.Once
}

// New starts a Network for a test and closes it on t.Cleanup. It fails the
// test if the network cannot start.
func New(t testing.TB, opts ...Option) *Network {
	t.Helper()
	var o Options
	for _, f := range opts {
		f(&o)
	}
	n, err := Start(context.Background(), o)
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// Start starts a Network. The servers run until Close; ctx only bounds
// start-up.
func Start(ctx context.Context, o Options) (*Network, error) {
	o = o.withDefaults()
	n := &Network{
		opts:     o,
		log:      o.Logger,
		accounts: make(map[syntax.DID]*Account),
		rng:      rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)),
		tids:     syntax.NewTIDClock(0),
		loads:    make(map[*Load]struct{}),
	}
	n.relay = newRelay(n, o.Retention)
	for i := 0; i < o.Hosts; i++ {
		n.hosts = append(n.hosts, &Host{net: n, index: i})
	}
	var lc net.ListenConfig
	listen := func(addr string) (net.Listener, error) {
		if addr == "" {
			addr = "127.0.0.1:0"
		}
		return lc.Listen(ctx, "tcp", addr)
	}
	fail := func(err error) (*Network, error) {
		_ = n.Close()
		return nil, fmt.Errorf("testnet: start: %w", err)
	}
	first := 0
	if o.Addr != "" {
		ln, err := listen(o.Addr)
		if err != nil {
			return fail(err)
		}
		base := "http://" + ln.Addr().String()
		n.plcURL, n.relayURL, n.hosts[0].url = base, base, base
		n.serve(ln, n.sharedHandler())
		first = 1
	} else {
		ln, err := listen("")
		if err != nil {
			return fail(err)
		}
		n.plcURL = "http://" + ln.Addr().String()
		n.serve(ln, http.HandlerFunc(n.servePLC))
		ln, err = listen("")
		if err != nil {
			return fail(err)
		}
		n.relayURL = "http://" + ln.Addr().String()
		n.serve(ln, n.relay.handler())
	}
	for _, h := range n.hosts[first:] {
		ln, err := listen("")
		if err != nil {
			return fail(err)
		}
		h.url = "http://" + ln.Addr().String()
		n.serve(ln, h.handler())
	}
	return n, nil
}

func (n *Network) serve(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	n.servers = append(n.servers, srv)
	n.serveWG.Add(1)
	go func() {
		defer n.serveWG.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("testnet: serve", "addr", ln.Addr(), "err", err)
		}
	}()
}

// sharedHandler routes PLC, relay and the first host on one server.
func (n *Network) sharedHandler() http.Handler {
	relay := n.relay.handler()
	pds := n.hosts[0].handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case strings.HasPrefix(p, "/did:"):
			n.servePLC(w, r)
		case p == "/xrpc/com.atproto.sync.subscribeRepos",
			p == "/xrpc/com.atproto.sync.listRepos",
			p == "/xrpc/com.atproto.sync.listReposByCollection":
			relay.ServeHTTP(w, r)
		default:
			pds.ServeHTTP(w, r)
		}
	})
}

// Close stops load generators, closes every firehose connection and server
// and waits for them. It is safe to call more than once.
func (n *Network) Close() error {
	n.closeOnce.Do(func() {
		n.loadMu.Lock()
		loads := make([]*Load, 0, len(n.loads))
		for l := range n.loads {
			loads = append(loads, l)
		}
		n.loadMu.Unlock()
		for _, l := range loads {
			l.Stop()
		}
		n.relay.close()
		for _, s := range n.servers {
			_ = s.Close()
		}
		n.serveWG.Wait()
	})
	return nil
}

// PLCURL returns the PLC directory's base URL (http://127.0.0.1:port).
func (n *Network) PLCURL() string { return n.plcURL }

// PDSURL returns the base URL of the first (default) PDS host.
func (n *Network) PDSURL() string { return n.hosts[0].url }

// RelayURL returns the relay's http base URL. The firehose is at
// FirehoseURL.
func (n *Network) RelayURL() string { return n.relayURL }

// FirehoseURL returns the relay's subscribeRepos WebSocket URL
// (ws://127.0.0.1:port/xrpc/com.atproto.sync.subscribeRepos).
func (n *Network) FirehoseURL() string {
	return "ws" + strings.TrimPrefix(n.relayURL, "http") + "/xrpc/com.atproto.sync.subscribeRepos"
}

// Relay returns the network's relay.
func (n *Network) Relay() *Relay { return n.relay }

// Host returns the i-th PDS host (0 is the default host). It panics if i is
// out of range, like a slice index.
func (n *Network) Host(i int) *Host { return n.hosts[i] }

// Hosts returns every PDS host.
func (n *Network) Hosts() []*Host { return slices.Clone(n.hosts) }

// Directory returns an identity.Directory that resolves DIDs through this
// network's PLC directory, without handle verification.
func (n *Network) Directory() identity.Directory {
	return &identity.BaseDirectory{
		PLCURL:                 n.plcURL,
		SkipHandleVerification: true,
		HTTPClient:             http.Client{Timeout: 10 * time.Second},
	}
}

// DIDDocument returns the DID document the PLC directory serves for did.
func (n *Network) DIDDocument(did syntax.DID) (identity.DIDDocument, bool) {
	a := n.Lookup(did)
	if a == nil {
		return identity.DIDDocument{}, false
	}
	return a.DIDDocument(), true
}

// PLCRequests returns how many DID documents the PLC directory was asked
// for.
func (n *Network) PLCRequests() int64 { return n.plc.get("") }

// Lookup returns the account with the given DID, or nil.
func (n *Network) Lookup(did syntax.DID) *Account {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.accounts[did]
}

// LookupHandle returns the account that currently has handle, or nil.
func (n *Network) LookupHandle(handle syntax.Handle) *Account {
	handle = handle.Normalize()
	for _, a := range n.Accounts() {
		if a.Handle() == handle {
			return a
		}
	}
	return nil
}

// Accounts returns every account (deleted ones included) in DID order.
func (n *Network) Accounts() []*Account {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]*Account, len(n.order))
	for i, d := range n.order {
		out[i] = n.accounts[d]
	}
	return out
}

// accountsAfter returns the accounts whose DID sorts after cursor.
func (n *Network) accountsAfter(cursor string) []*Account {
	n.mu.RLock()
	defer n.mu.RUnlock()
	i, _ := slices.BinarySearch(n.order, syntax.DID(cursor))
	for i < len(n.order) && string(n.order[i]) <= cursor {
		i++
	}
	out := make([]*Account, 0, len(n.order)-i)
	for _, d := range n.order[i:] {
		out = append(out, n.accounts[d])
	}
	return out
}

func (n *Network) servePLC(w http.ResponseWriter, r *http.Request) {
	n.plc.add(r.URL.Path)
	did, err := syntax.ParseDID(strings.TrimPrefix(r.URL.Path, "/"))
	if err != nil || r.Method != http.MethodGet {
		http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
		return
	}
	doc, ok := n.DIDDocument(did)
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"message":"DID not registered: `+did.String()+`"}`)
		return
	}
	type plcDoc struct {
		Context []string `json:"@context"`
		identity.DIDDocument
	}
	writeJSON(w, plcDoc{
		Context:     []string{"https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"},
		DIDDocument: doc,
	})
}

// nextTID returns a fresh TID for rkeys, unique in the network.
func (n *Network) nextTID() syntax.TID {
	n.tidMu.Lock()
	defer n.tidMu.Unlock()
	return n.tids.Next()
}

// newIdentity draws a DID and a signing key from the network's seed.
func (n *Network) newIdentity() (syntax.DID, *atcrypto.PrivateKeyK256, error) {
	return identityFromSeed(n.newSeed())
}

func (n *Network) newSeed() [32]byte {
	n.rngMu.Lock()
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[0:], n.rng.Uint64())
	binary.LittleEndian.PutUint64(seed[8:], n.rng.Uint64())
	binary.LittleEndian.PutUint64(seed[16:], n.rng.Uint64())
	binary.LittleEndian.PutUint64(seed[24:], n.rng.Uint64())
	n.rngMu.Unlock()
	return seed
}

var plcBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func identityFromSeed(seed [32]byte) (syntax.DID, *atcrypto.PrivateKeyK256, error) {
	h := sha256.Sum256(append([]byte("did"), seed[:]...))
	did := syntax.DID("did:plc:" + plcBase32.EncodeToString(h[:])[:24])
	k := seed
	for i := 0; i < 8; i++ {
		key, err := atcrypto.ParsePrivateBytesK256(k[:])
		if err == nil {
			return did, key, nil
		}
		k = sha256.Sum256(k[:])
	}
	return "", nil, errors.New("testnet: could not derive a signing key")
}

// register adds a to the network's index.
func (n *Network) register(a *Account) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, dup := n.accounts[a.did]; dup {
		return fmt.Errorf("testnet: DID %s already exists", a.did)
	}
	n.accounts[a.did] = a
	i, _ := slices.BinarySearch(n.order, a.did)
	n.order = slices.Insert(n.order, i, a.did)
	return nil
}

func (n *Network) handleFor(handle string) (syntax.Handle, error) {
	if handle == "" {
		n.mu.Lock()
		n.nextUser++
		handle = fmt.Sprintf("user%d.test", n.nextUser)
		n.mu.Unlock()
	}
	h, err := syntax.ParseHandle(handle)
	if err != nil {
		return "", fmt.Errorf("testnet: %w", err)
	}
	return h.Normalize(), nil
}
