package resolver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Options configure a Cached resolver. The zero value is usable: every field
// has a default, applied by NewCached.
type Options struct {
	// PLCURL is the PLC directory that resolves did:plc, without a trailing
	// slash. Default "https://plc.directory".
	PLCURL string
	// HTTPClient makes every request: PLC, did:web documents and HTTPS
	// handle resolution. Default: a client with a 10 s timeout.
	HTTPClient *http.Client
	// Capacity bounds the number of DIDs cached, and separately the number
	// of handles cached; the least recently used entry is evicted first.
	// Default 100_000.
	Capacity int
	// TTL is how long a resolved identity or handle is served from the
	// cache. Default 1 h.
	TTL time.Duration
	// NegativeTTL is how long a "not found" or "incomplete" answer is served
	// from the cache, and how long the verdict of a handle check that failed
	// for a transient reason (handle reported invalid) is kept before the
	// handle is checked again. Default 1 m.
	NegativeTTL time.Duration
	// SkipHandleVerification turns off the bidirectional handle check:
	// Resolve then reports the handle the DID document declares, unchecked
	// ("handle.invalid" if it declares none), and ResolveHandle does not
	// check that the DID document claims the handle.
	// With the check on (the default), a handle that does not resolve back
	// to the DID is reported as "handle.invalid".
	SkipHandleVerification bool
	// SkipDNSDomainSuffixes lists handle suffixes (such as ".test") that are
	// resolved over HTTPS only, without a DNS TXT lookup. Default none.
	SkipDNSDomainSuffixes []string
	// HandleTimeout bounds one handle check (the DNS TXT lookup and the
	// HTTPS well-known request together); a check that runs out of time
	// counts as a transient failure. Default 10 s.
	HandleTimeout time.Duration
	// UserAgent is sent with every HTTP request when not empty.
	UserAgent string
	// Logger receives debug messages about failed handle checks. Default:
	// discard.
	Logger *slog.Logger
	// Now tells the time, for expiry. Default time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.PLCURL == "" {
		o.PLCURL = identity.DefaultPLCURL
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Capacity <= 0 {
		o.Capacity = 100_000
	}
	if o.TTL <= 0 {
		o.TTL = time.Hour
	}
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = time.Minute
	}
	if o.HandleTimeout <= 0 {
		o.HandleTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Cached is the default Resolver: did:plc through a PLC directory and did:web
// over HTTPS (indigo's identity.BaseDirectory), with handles verified both
// ways, answers kept in a bounded LRU cache with expiry, negative caching of
// "not found", and concurrent resolves of one DID coalesced into one request.
//
// Cached is also a HandleChecker: ResolveDocument answers from the DID
// document alone, and CheckHandle does the handle check, whose answer is
// cached beside the document (TTL for a verdict, NegativeTTL after a
// transient failure). Resolve is ResolveDocument followed, when the handle
// is not known yet, by CheckHandle.
//
// Cached is safe for concurrent use and starts no goroutines.
type Cached struct {
	opts Options
	dir  *identity.BaseDirectory

	mu        sync.Mutex
	dids      *lru[syntax.DID, didEntry]
	handles   *lru[syntax.Handle, handleEntry]
	handlesOf map[syntax.DID][]syntax.Handle // reverse index of positive handle entries
	flights   map[syntax.DID]*flight[didEntry]
	checks    map[syntax.DID]*flight[syntax.Handle]
}

// didEntry is what is cached about a DID: its document's answer, and the
// verdict of the check of the handle it declares.
type didEntry struct {
	ident    Identity      // Handle unused: see declared and handle
	declared syntax.Handle // the handle the document declares; "" for none
	err      error         // ErrNotFound or ErrIncomplete when not nil
	expires  time.Time
	// handle is the verdict of the last check of declared (declared, or
	// HandleInvalid), valid until handleExpires; "" when never checked.
	handle        syntax.Handle
	handleExpires time.Time
}

type handleEntry struct {
	did     syntax.DID
	err     error // ErrNotFound when not nil
	expires time.Time
}

// flight is one lookup in progress; callers that want the same answer wait
// for it instead of starting their own.
type flight[T any] struct {
	done   chan struct{}
	val    T
	err    error
	purged bool // Purge ran while in flight: do not cache the result
	// abandoned is set when the caller that started the lookup gave up
	// (its context ended) before an answer came.
	abandoned bool
	waiters   int // callers that joined, beyond the one that started it
}

// NewCached returns a Cached resolver configured by opts (see Options for
// the defaults).
func NewCached(opts Options) *Cached {
	opts = opts.withDefaults()
	c := &Cached{
		opts: opts,
		dir: &identity.BaseDirectory{
			PLCURL:                 opts.PLCURL,
			HTTPClient:             *opts.HTTPClient,
			SkipDNSDomainSuffixes:  slices.Clone(opts.SkipDNSDomainSuffixes),
			SkipHandleVerification: opts.SkipHandleVerification,
			UserAgent:              opts.UserAgent,
		},
		dids:      newLRU[syntax.DID, didEntry](opts.Capacity),
		handles:   newLRU[syntax.Handle, handleEntry](opts.Capacity),
		handlesOf: make(map[syntax.DID][]syntax.Handle),
		flights:   make(map[syntax.DID]*flight[didEntry]),
		checks:    make(map[syntax.DID]*flight[syntax.Handle]),
	}
	c.handles.onEvict = c.unindexHandle
	return c
}

// Resolve returns the identity of did, from the cache when it holds a fresh
// answer, otherwise from the network, with its handle checked both ways
// (unless Options.SkipHandleVerification). Concurrent calls for the same DID
// share one lookup. Not-found and incomplete answers are cached for
// Options.NegativeTTL; network failures are not cached.
func (c *Cached) Resolve(ctx context.Context, did syntax.DID) (*Identity, error) {
	e, err := c.document(ctx, did)
	if err != nil {
		return nil, err
	}
	ident := e.ident
	if ident.Handle, err = c.checkHandle(ctx, did, e); err != nil {
		return nil, err
	}
	return &ident, nil
}

// ResolveDocument returns the identity of did from its DID document, cached
// as Resolve caches it, without waiting for a handle check: Handle is the
// verdict of an earlier check while it is fresh, HandleInvalid when the
// document declares no handle, the declared handle unchecked when
// Options.SkipHandleVerification is set, and "" otherwise (call CheckHandle).
func (c *Cached) ResolveDocument(ctx context.Context, did syntax.DID) (*Identity, error) {
	e, err := c.document(ctx, did)
	if err != nil {
		return nil, err
	}
	ident := e.ident
	ident.Handle = c.handleOf(did, e)
	return &ident, nil
}

// handleOf returns what is known of the handle of e, the cached document of
// did: see ResolveDocument.
func (c *Cached) handleOf(did syntax.DID, e didEntry) syntax.Handle {
	switch {
	case e.declared == "":
		return syntax.HandleInvalid
	case c.opts.SkipHandleVerification:
		return e.declared
	case e.handle != "" && c.opts.Now().Before(e.handleExpires):
		return e.handle
	}
	// ResolveHandle may have verified it from the other side.
	c.mu.Lock()
	he, ok := c.handles.get(e.declared)
	c.mu.Unlock()
	if ok && he.err == nil && he.did == did && c.opts.Now().Before(he.expires) {
		return e.declared
	}
	return ""
}

// CheckHandle checks the handle that did's document declares both ways: it
// must resolve (DNS TXT record, then HTTPS well-known) back to did. It
// returns the handle when it does, HandleInvalid when it does not, when the
// document declares none, or when the check failed for a transient reason
// (that verdict is kept only NegativeTTL). Each check is bounded by
// Options.HandleTimeout; concurrent checks of one DID share one lookup, and
// the verdict is cached (TTL) for Resolve and ResolveDocument. An error is
// returned only when the DID itself does not resolve or ctx ends.
func (c *Cached) CheckHandle(ctx context.Context, did syntax.DID) (syntax.Handle, error) {
	e, err := c.document(ctx, did)
	if err != nil {
		return "", err
	}
	return c.checkHandle(ctx, did, e)
}

// checkHandle is CheckHandle for e, the document of did just resolved.
func (c *Cached) checkHandle(ctx context.Context, did syntax.DID, e didEntry) (syntax.Handle, error) {
	if h := c.handleOf(did, e); h != "" {
		return h, nil
	}
	declared := e.declared
	return join(ctx, c, c.checks, did, func(f *flight[syntax.Handle]) (syntax.Handle, error) {
		h, ttl, err := c.verifyHandle(ctx, did, declared)
		if err != nil {
			return "", err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if f.purged {
			return h, nil
		}
		now := c.opts.Now()
		if cur, ok := c.dids.get(did); ok && cur.err == nil && cur.declared == declared {
			cur.handle, cur.handleExpires = h, now.Add(ttl)
			c.dids.put(did, cur)
		}
		if h == declared {
			c.putHandleLocked(declared, handleEntry{did: did, expires: now.Add(ttl)})
		}
		return h, nil
	})
}

// join runs lookup for key unless a lookup of key is already in flight in
// flights, in which case it waits for that one's answer. A waiter whose
// leader gave up (its context ended) looks up again.
func join[T any](ctx context.Context, c *Cached, flights map[syntax.DID]*flight[T], key syntax.DID,
	lookup func(f *flight[T]) (T, error)) (T, error) {
	var zero T
	for {
		c.mu.Lock()
		if f, ok := flights[key]; ok {
			f.waiters++
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return zero, fmt.Errorf("resolver: resolve %s: %w", key, ctx.Err())
			}
			if f.abandoned {
				continue
			}
			return f.val, f.err
		}
		f := &flight[T]{done: make(chan struct{})}
		flights[key] = f
		c.mu.Unlock()

		val, err := lookup(f)

		c.mu.Lock()
		f.val, f.err = val, err
		f.abandoned = err != nil && ctx.Err() != nil
		if flights[key] == f {
			delete(flights, key)
		}
		c.mu.Unlock()
		close(f.done)
		return val, err
	}
}

// document returns the cached answer for did's document, or fetches it.
func (c *Cached) document(ctx context.Context, did syntax.DID) (didEntry, error) {
	c.mu.Lock()
	if e, ok := c.dids.get(did); ok && c.opts.Now().Before(e.expires) {
		c.mu.Unlock()
		return e, e.err
	}
	c.mu.Unlock()
	return join(ctx, c, c.flights, did, func(f *flight[didEntry]) (didEntry, error) {
		e, err := c.fetch(ctx, did)
		c.mu.Lock()
		defer c.mu.Unlock()
		if !f.purged {
			c.storeLocked(did, e, err)
		}
		if err != nil {
			return didEntry{}, err
		}
		return e, nil
	})
}

// storeLocked caches the outcome of a fetch: a document for TTL (keeping
// the verdict of the previous check if it was of the same handle), a
// not-found or incomplete answer for NegativeTTL, anything else not at all.
func (c *Cached) storeLocked(did syntax.DID, e didEntry, err error) {
	now := c.opts.Now()
	switch {
	case err == nil:
		if old, ok := c.dids.get(did); ok && old.err == nil && old.declared == e.declared {
			e.handle, e.handleExpires = old.handle, old.handleExpires
		}
		e.expires = now.Add(c.opts.TTL)
		c.dids.put(did, e)
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrIncomplete):
		c.dids.put(did, didEntry{err: err, expires: now.Add(c.opts.NegativeTTL)})
	}
}

// fetch resolves did's document over the network, without the cache and
// without checking its handle.
func (c *Cached) fetch(ctx context.Context, did syntax.DID) (didEntry, error) {
	switch did.Method() {
	case "plc", "web":
	default:
		return didEntry{}, fmt.Errorf("resolver: resolve %s: %w: DID method %q is not supported", did, ErrNotFound, did.Method())
	}
	raw, err := c.dir.ResolveDIDRaw(ctx, did)
	if err != nil {
		if errors.Is(err, identity.ErrDIDNotFound) {
			return didEntry{}, fmt.Errorf("resolver: resolve %s: %w: %w", did, ErrNotFound, err)
		}
		return didEntry{}, fmt.Errorf("resolver: resolve %s: %w", did, err)
	}
	var doc identity.DIDDocument
	if err := json.Unmarshal(raw, &doc); err != nil {
		return didEntry{}, fmt.Errorf("resolver: resolve %s: DID document: %w", did, err)
	}
	parsed := identity.ParseIdentity(&doc)
	pds := parsed.PDSEndpoint()
	if pds == "" {
		return didEntry{}, fmt.Errorf("resolver: resolve %s: %w: no #atproto_pds service endpoint", did, ErrIncomplete)
	}
	key, err := parsed.PublicKey()
	if err != nil {
		return didEntry{}, fmt.Errorf("resolver: resolve %s: %w: #atproto signing key: %w", did, ErrIncomplete, err)
	}
	e := didEntry{ident: Identity{DID: did, Handle: syntax.HandleInvalid, PDS: pds, SigningKey: key, Document: compactJSON(raw)}}
	if declared, err := parsed.DeclaredHandle(); err == nil {
		// A handle that does not parse is as good as none.
		e.declared = declared.Normalize()
	}
	return e, nil
}

// verifyHandle checks over the network that declared resolves to did. It
// returns the verdict and how long it may be cached: TTL, or NegativeTTL
// when the handle could not be checked for a transient reason (a timeout
// included). It fails only when ctx ends.
func (c *Cached) verifyHandle(ctx context.Context, did syntax.DID, declared syntax.Handle) (syntax.Handle, time.Duration, error) {
	lctx, cancel := context.WithTimeout(ctx, c.opts.HandleTimeout)
	defer cancel()
	resolved, err := c.lookupHandle(lctx, declared)
	switch {
	case err == nil && resolved == did:
		return declared, c.opts.TTL, nil
	case err == nil:
		c.opts.Logger.Debug("handle points to another DID", "did", did, "handle", declared, "resolved", resolved)
		return syntax.HandleInvalid, c.opts.TTL, nil
	case errors.Is(err, identity.ErrHandleNotFound), errors.Is(err, identity.ErrHandleReservedTLD),
		errors.Is(err, identity.ErrInvalidHandle):
		c.opts.Logger.Debug("handle does not resolve", "did", did, "handle", declared, "err", err)
		return syntax.HandleInvalid, c.opts.TTL, nil
	case ctx.Err() != nil:
		return "", 0, fmt.Errorf("resolver: resolve %s: verify handle %s: %w", did, declared, ctx.Err())
	default:
		// A transient failure (or HandleTimeout): report the handle
		// invalid, and look again soon rather than in an hour.
		c.opts.Logger.Debug("handle check failed", "did", did, "handle", declared, "err", err)
		return syntax.HandleInvalid, c.opts.NegativeTTL, nil
	}
}

// ResolveHandle returns the DID that h points to (DNS TXT record or HTTPS
// well-known), served from the cache when fresh. Unless handle verification
// is skipped, it also resolves the DID and checks that its document claims
// h; if not, it returns an error wrapping ErrNotFound.
func (c *Cached) ResolveHandle(ctx context.Context, h syntax.Handle) (syntax.DID, error) {
	h = h.Normalize()
	if h.IsInvalidHandle() {
		return "", fmt.Errorf("resolver: resolve handle %s: %w", h, ErrNotFound)
	}
	c.mu.Lock()
	e, ok := c.handles.get(h)
	c.mu.Unlock()
	if ok && c.opts.Now().Before(e.expires) {
		return e.did, e.err
	}

	did, err := c.lookupHandle(ctx, h)
	if err != nil {
		if errors.Is(err, identity.ErrHandleNotFound) || errors.Is(err, identity.ErrHandleReservedTLD) ||
			errors.Is(err, identity.ErrInvalidHandle) {
			err = fmt.Errorf("resolver: resolve handle %s: %w: %w", h, ErrNotFound, err)
			c.mu.Lock()
			c.putHandleLocked(h, handleEntry{err: err, expires: c.opts.Now().Add(c.opts.NegativeTTL)})
			c.mu.Unlock()
			return "", err
		}
		return "", fmt.Errorf("resolver: resolve handle %s: %w", h, err)
	}
	if !c.opts.SkipHandleVerification {
		// h resolves to did; it is verified both ways if did's document
		// claims it.
		e, err := c.document(ctx, did)
		if err != nil {
			return "", fmt.Errorf("resolver: resolve handle %s: %w", h, err)
		}
		if e.declared != h {
			err := fmt.Errorf("resolver: resolve handle %s: %w: %s does not claim it", h, ErrNotFound, did)
			c.mu.Lock()
			c.putHandleLocked(h, handleEntry{err: err, expires: c.opts.Now().Add(c.opts.NegativeTTL)})
			c.mu.Unlock()
			return "", err
		}
	}
	c.mu.Lock()
	c.putHandleLocked(h, handleEntry{did: did, expires: c.opts.Now().Add(c.opts.TTL)})
	c.mu.Unlock()
	return did, nil
}

// lookupHandle resolves h over the network. It calls the directory's HTTPS
// well-known lookup directly for handles under SkipDNSDomainSuffixes: in
// that case BaseDirectory.ResolveHandle reports a failure as ("", nil).
func (c *Cached) lookupHandle(ctx context.Context, h syntax.Handle) (syntax.DID, error) {
	h = h.Normalize()
	if h.IsInvalidHandle() {
		return "", identity.ErrInvalidHandle
	}
	if !h.AllowedTLD() {
		return "", identity.ErrHandleReservedTLD
	}
	var did syntax.DID
	var err error
	if c.skipDNS(h) {
		did, err = c.dir.ResolveHandleWellKnown(ctx, h)
	} else {
		did, err = c.dir.ResolveHandle(ctx, h)
	}
	if err == nil && did == "" {
		err = identity.ErrHandleResolutionFailed
	}
	return did, err
}

func (c *Cached) skipDNS(h syntax.Handle) bool {
	for _, suffix := range c.opts.SkipDNSDomainSuffixes {
		if strings.HasSuffix(h.String(), suffix) {
			return true
		}
	}
	return false
}

// putHandleLocked stores a handle entry and keeps the DID → handles index.
func (c *Cached) putHandleLocked(h syntax.Handle, e handleEntry) {
	c.handles.remove(h) // unindexes the previous entry, if any
	c.handles.put(h, e)
	if e.did != "" && !slices.Contains(c.handlesOf[e.did], h) {
		c.handlesOf[e.did] = append(c.handlesOf[e.did], h)
	}
}

// unindexHandle is called by the handle LRU for every entry that leaves it.
func (c *Cached) unindexHandle(h syntax.Handle, e handleEntry) {
	if e.did == "" {
		return
	}
	hs := slices.DeleteFunc(c.handlesOf[e.did], func(x syntax.Handle) bool { return x == h })
	if len(hs) == 0 {
		delete(c.handlesOf, e.did)
	} else {
		c.handlesOf[e.did] = hs
	}
}

// Purge forgets the cached identity of did, the verdict of its handle
// check, the cached handles that point to it, and any lookup or check of it
// in flight (its result will not be cached). It returns nil.
func (c *Cached) Purge(ctx context.Context, did syntax.DID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dids.remove(did)
	for _, h := range slices.Clone(c.handlesOf[did]) {
		c.handles.remove(h)
	}
	if f, ok := c.flights[did]; ok {
		f.purged = true
		delete(c.flights, did)
	}
	if f, ok := c.checks[did]; ok {
		f.purged = true
		delete(c.checks, did)
	}
	return nil
}

// Len returns the number of DIDs cached (answers found and not found),
// expired entries included until they are evicted or replaced.
func (c *Cached) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dids.len()
}

// compactJSON returns raw without insignificant whitespace (a DID document
// as served may be indented), or raw itself if it does not compact.
func compactJSON(raw []byte) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}
