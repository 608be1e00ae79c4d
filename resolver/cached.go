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
	// from the cache, and how long an identity whose handle could not be
	// checked (a transient failure) is kept before trying again. Default 1 m.
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
// Cached is safe for concurrent use and starts no goroutines.
type Cached struct {
	opts Options
	dir  *identity.BaseDirectory

	mu        sync.Mutex
	dids      *lru[syntax.DID, didEntry]
	handles   *lru[syntax.Handle, handleEntry]
	handlesOf map[syntax.DID][]syntax.Handle // reverse index of positive handle entries
	flights   map[syntax.DID]*flight
}

type didEntry struct {
	ident   Identity
	err     error // ErrNotFound or ErrIncomplete when not nil
	expires time.Time
}

type handleEntry struct {
	did     syntax.DID
	err     error // ErrNotFound when not nil
	expires time.Time
}

// flight is one resolve in progress; callers that want the same DID wait
// for it instead of starting their own.
type flight struct {
	done   chan struct{}
	ident  Identity
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
		flights:   make(map[syntax.DID]*flight),
	}
	c.handles.onEvict = c.unindexHandle
	return c
}

// Resolve returns the identity of did, from the cache when it holds a fresh
// answer, otherwise from the network. Concurrent calls for the same DID
// share one lookup. Not-found and incomplete answers are cached for
// Options.NegativeTTL; network failures are not cached.
func (c *Cached) Resolve(ctx context.Context, did syntax.DID) (*Identity, error) {
	for {
		c.mu.Lock()
		if e, ok := c.dids.get(did); ok && c.opts.Now().Before(e.expires) {
			c.mu.Unlock()
			if e.err != nil {
				return nil, e.err
			}
			id := e.ident
			return &id, nil
		}
		if f, ok := c.flights[did]; ok {
			f.waiters++
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("resolver: resolve %s: %w", did, ctx.Err())
			}
			if f.abandoned {
				// The caller that started the lookup gave up; this one has
				// not, so it looks up again.
				continue
			}
			if f.err != nil {
				return nil, f.err
			}
			id := f.ident
			return &id, nil
		}
		f := &flight{done: make(chan struct{})}
		c.flights[did] = f
		c.mu.Unlock()

		ident, ttl, err := c.fetch(ctx, did)

		c.mu.Lock()
		f.ident, f.err = ident, err
		f.abandoned = err != nil && ctx.Err() != nil
		if c.flights[did] == f {
			delete(c.flights, did)
		}
		if !f.purged {
			c.storeLocked(did, ident, ttl, err)
		}
		c.mu.Unlock()
		close(f.done)
		if err != nil {
			return nil, err
		}
		return &ident, nil
	}
}

// storeLocked caches the outcome of a fetch: an identity for ttl, a
// not-found or incomplete answer for NegativeTTL, anything else not at all.
func (c *Cached) storeLocked(did syntax.DID, ident Identity, ttl time.Duration, err error) {
	now := c.opts.Now()
	switch {
	case err == nil:
		c.dids.put(did, didEntry{ident: ident, expires: now.Add(ttl)})
		if !ident.Handle.IsInvalidHandle() {
			c.putHandleLocked(ident.Handle, handleEntry{did: did, expires: now.Add(ttl)})
		}
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrIncomplete):
		c.dids.put(did, didEntry{err: err, expires: now.Add(c.opts.NegativeTTL)})
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// fetch resolves did over the network, without the cache. It returns how
// long the identity may be cached: TTL, or NegativeTTL when the handle could
// not be checked for a transient reason.
func (c *Cached) fetch(ctx context.Context, did syntax.DID) (Identity, time.Duration, error) {
	switch did.Method() {
	case "plc", "web":
	default:
		return Identity{}, 0, fmt.Errorf("resolver: resolve %s: %w: DID method %q is not supported", did, ErrNotFound, did.Method())
	}
	raw, err := c.dir.ResolveDIDRaw(ctx, did)
	if err != nil {
		if errors.Is(err, identity.ErrDIDNotFound) {
			return Identity{}, 0, fmt.Errorf("resolver: resolve %s: %w: %w", did, ErrNotFound, err)
		}
		return Identity{}, 0, fmt.Errorf("resolver: resolve %s: %w", did, err)
	}
	var doc identity.DIDDocument
	if err := json.Unmarshal(raw, &doc); err != nil {
		return Identity{}, 0, fmt.Errorf("resolver: resolve %s: DID document: %w", did, err)
	}
	parsed := identity.ParseIdentity(&doc)
	pds := parsed.PDSEndpoint()
	if pds == "" {
		return Identity{}, 0, fmt.Errorf("resolver: resolve %s: %w: no #atproto_pds service endpoint", did, ErrIncomplete)
	}
	key, err := parsed.PublicKey()
	if err != nil {
		return Identity{}, 0, fmt.Errorf("resolver: resolve %s: %w: #atproto signing key: %w", did, ErrIncomplete, err)
	}
	ident := Identity{DID: did, Handle: syntax.HandleInvalid, PDS: pds, SigningKey: key, Document: compactJSON(raw)}
	ttl := c.opts.TTL
	declared, err := parsed.DeclaredHandle()
	if err != nil {
		// No handle, or one that does not parse: nothing to verify.
		return ident, ttl, nil
	}
	if c.opts.SkipHandleVerification {
		ident.Handle = declared
		return ident, ttl, nil
	}
	resolved, err := c.lookupHandle(ctx, declared)
	switch {
	case err == nil && resolved == did:
		ident.Handle = declared
	case err == nil:
		c.opts.Logger.Debug("handle points to another DID", "did", did, "handle", declared, "resolved", resolved)
	case errors.Is(err, identity.ErrHandleNotFound), errors.Is(err, identity.ErrHandleReservedTLD),
		errors.Is(err, identity.ErrInvalidHandle):
		c.opts.Logger.Debug("handle does not resolve", "did", did, "handle", declared, "err", err)
	case isContextErr(err):
		return Identity{}, 0, fmt.Errorf("resolver: resolve %s: verify handle %s: %w", did, declared, err)
	default:
		// A transient failure: report the handle invalid, and look again
		// soon rather than in an hour.
		c.opts.Logger.Debug("handle check failed", "did", did, "handle", declared, "err", err)
		ttl = c.opts.NegativeTTL
	}
	return ident, ttl, nil
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
		ident, err := c.Resolve(ctx, did)
		if err != nil {
			return "", fmt.Errorf("resolver: resolve handle %s: %w", h, err)
		}
		if ident.Handle != h {
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

// Purge forgets the cached identity of did, the cached handles that point
// to it, and any lookup of it in flight (its result will not be cached).
// It returns nil.
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
