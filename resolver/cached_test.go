package resolver_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/resolver/resolvertest"
)

// clock is a settable time source for Options.Now.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// newCached returns a Cached resolver against a fresh fake directory.
func newCached(t *testing.T, opts resolver.Options) (*resolver.Cached, *resolvertest.Directory) {
	t.Helper()
	dir := resolvertest.NewDirectory(t)
	opts.PLCURL = dir.URL()
	opts.HTTPClient = dir.Client()
	opts.SkipDNSDomainSuffixes = []string{".test"}
	return resolver.NewCached(opts), dir
}

func TestCachedConformance(t *testing.T) {
	resolvertest.Run(t, func(t *testing.T) resolvertest.Harness {
		c, dir := newCached(t, resolver.Options{})
		return resolvertest.Harness{Resolver: c, Put: dir.Put, Remove: dir.Remove}
	})
}

var ctx = context.Background()

func TestCachedServesFromCacheUntilTTL(t *testing.T) {
	clk := newClock()
	c, dir := newCached(t, resolver.Options{TTL: time.Hour, Now: clk.Now})
	v1 := resolvertest.NewIdentity(t, "did:plc:ttl000000000000000000000", "ttl.test", "https://pds1.test")
	dir.Put(v1)
	resolvertest.AssertIdentity(t, mustResolve(t, c, v1.DID), v1)

	v2 := resolvertest.NewIdentity(t, v1.DID, "ttl.test", "https://pds2.test")
	dir.Put(v2)
	clk.Advance(59 * time.Minute)
	resolvertest.AssertIdentity(t, mustResolve(t, c, v1.DID), v1) // still cached
	if n := dir.Requests(v1.DID.String()); n != 1 {
		t.Errorf("directory saw %d requests within the TTL, want 1", n)
	}

	clk.Advance(2 * time.Minute)
	resolvertest.AssertIdentity(t, mustResolve(t, c, v1.DID), v2) // expired, fetched again
	if n := dir.Requests(v1.DID.String()); n != 2 {
		t.Errorf("directory saw %d requests, want 2", n)
	}
}

func TestCachedNegativeCaching(t *testing.T) {
	clk := newClock()
	c, dir := newCached(t, resolver.Options{NegativeTTL: time.Minute, Now: clk.Now})
	did := syntax.DID("did:plc:negative0000000000000000")
	for range 3 {
		if _, err := c.Resolve(ctx, did); !errors.Is(err, resolver.ErrNotFound) {
			t.Fatalf("Resolve = %v, want ErrNotFound", err)
		}
	}
	if n := dir.Requests(did.String()); n != 1 {
		t.Errorf("directory saw %d requests for an unknown DID, want 1 (negative cache)", n)
	}

	// Created meanwhile: still "not found" until the negative entry expires.
	ident := resolvertest.NewIdentity(t, did, "negative.test", "https://pds.test")
	dir.Put(ident)
	clk.Advance(30 * time.Second)
	if _, err := c.Resolve(ctx, did); !errors.Is(err, resolver.ErrNotFound) {
		t.Fatalf("Resolve within NegativeTTL = %v, want ErrNotFound", err)
	}
	clk.Advance(31 * time.Second)
	resolvertest.AssertIdentity(t, mustResolve(t, c, did), ident)
	if n := dir.Requests(did.String()); n != 2 {
		t.Errorf("directory saw %d requests, want 2", n)
	}
}

func TestCachedNetworkFailureIsNotNotFound(t *testing.T) {
	c, dir := newCached(t, resolver.Options{})
	ident := resolvertest.NewIdentity(t, "did:plc:flaky00000000000000000000", "flaky.test", "https://pds.test")
	dir.Put(ident)
	dir.SetDown(true)
	for range 2 {
		_, err := c.Resolve(ctx, ident.DID)
		if err == nil || errors.Is(err, resolver.ErrNotFound) || errors.Is(err, resolver.ErrIncomplete) {
			t.Fatalf("Resolve with the directory down = %v; want a plain error", err)
		}
	}
	if n := dir.Requests(ident.DID.String()); n != 2 {
		t.Errorf("failures were cached: %d requests, want 2", n)
	}
	if _, err := c.ResolveHandle(ctx, ident.Handle); err == nil || errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("ResolveHandle with the directory down = %v; want a plain error", err)
	}
	dir.SetDown(false)
	resolvertest.AssertIdentity(t, mustResolve(t, c, ident.DID), ident)
}

func TestCachedCapacity(t *testing.T) {
	c, dir := newCached(t, resolver.Options{Capacity: 2})
	var idents []*resolver.Identity
	for _, s := range []string{"did:plc:cap1", "did:plc:cap2", "did:plc:cap3"} {
		ident := resolvertest.NewIdentity(t, syntax.DID(s), syntax.HandleInvalid, "https://pds.test")
		dir.Put(ident)
		idents = append(idents, ident)
		mustResolve(t, c, ident.DID)
		if c.Len() > 2 {
			t.Fatalf("Len() = %d with Capacity 2", c.Len())
		}
	}
	// cap1 was the least recently used: evicted, fetched again.
	mustResolve(t, c, idents[2].DID)
	mustResolve(t, c, idents[0].DID)
	if n := dir.Requests("did:plc:cap1"); n != 2 {
		t.Errorf("cap1 requested %d times, want 2 (evicted)", n)
	}
	if n := dir.Requests("did:plc:cap3"); n != 1 {
		t.Errorf("cap3 requested %d times, want 1 (cached)", n)
	}
	if c.Len() != 2 {
		t.Errorf("Len() = %d, want 2", c.Len())
	}
}

func TestCachedCoalescesConcurrentResolves(t *testing.T) {
	const n = 8
	c, dir := newCached(t, resolver.Options{})
	ident := resolvertest.NewIdentity(t, "did:plc:coalesce000000000000000000", "coalesce.test", "https://pds.test")
	dir.Put(ident)
	release := dir.Hold()
	defer release()

	var wg sync.WaitGroup
	results := make([]*resolver.Identity, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = c.Resolve(ctx, ident.DID) })
	}
	waitFor(t, func() bool { return c.Waiters(ident.DID) == n-1 })
	release()
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Resolve %d: %v", i, errs[i])
		}
		resolvertest.AssertIdentity(t, results[i], ident)
	}
	if got := dir.Requests(ident.DID.String()); got != 1 {
		t.Errorf("directory saw %d requests for %d concurrent resolves, want 1", got, n)
	}
}

func TestCachedWaiterSurvivesLeaderCancel(t *testing.T) {
	c, dir := newCached(t, resolver.Options{})
	ident := resolvertest.NewIdentity(t, "did:plc:leader00000000000000000000", "leader.test", "https://pds.test")
	dir.Put(ident)
	release := dir.Hold()
	defer release()

	leaderCtx, cancel := context.WithCancel(ctx)
	leaderErr := make(chan error, 1)
	go func() {
		_, err := c.Resolve(leaderCtx, ident.DID)
		leaderErr <- err
	}()
	waitFor(t, func() bool { return c.Waiters(ident.DID) == 0 })
	var got *resolver.Identity
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		got, err = c.Resolve(ctx, ident.DID)
	}()
	waitFor(t, func() bool { return c.Waiters(ident.DID) == 1 })
	cancel()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Errorf("leader: %v, want context.Canceled", err)
	}
	release()
	<-done
	if err != nil {
		t.Fatalf("waiter: %v", err)
	}
	resolvertest.AssertIdentity(t, got, ident)
}

func TestCachedPurgeDuringFlight(t *testing.T) {
	c, dir := newCached(t, resolver.Options{})
	v1 := resolvertest.NewIdentity(t, "did:plc:inflight000000000000000000", "inflight.test", "https://pds1.test")
	dir.Put(v1)
	release := dir.Hold()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Resolve(ctx, v1.DID) // fetches v1 while held
	}()
	waitFor(t, func() bool { return c.Waiters(v1.DID) == 0 })
	if err := c.Purge(ctx, v1.DID); err != nil {
		t.Fatal(err)
	}
	release()
	<-done
	// The lookup that was in flight when Purge ran must not be cached.
	v2 := resolvertest.NewIdentity(t, v1.DID, "inflight.test", "https://pds2.test")
	dir.Put(v2)
	resolvertest.AssertIdentity(t, mustResolve(t, c, v1.DID), v2)
}

func TestCachedHandleVerification(t *testing.T) {
	const did = syntax.DID("did:plc:mallory000000000000000000")
	tests := []struct {
		name       string
		skip       bool
		handleDID  syntax.DID // what the handle resolves to; "" for not at all
		wantHandle syntax.Handle
	}{
		{"verified", false, did, "mallory.test"},
		{"points elsewhere", false, "did:plc:someoneelse00000000000000", syntax.HandleInvalid},
		{"does not resolve", false, "", syntax.HandleInvalid},
		{"skipped: declared handle, unchecked", true, "", "mallory.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, dir := newCached(t, resolver.Options{SkipHandleVerification: tt.skip})
			ident := resolvertest.NewIdentity(t, did, "mallory.test", "https://pds.test")
			dir.Put(ident)
			dir.SetHandle("mallory.test", tt.handleDID)
			got := mustResolve(t, c, did)
			if got.Handle != tt.wantHandle {
				t.Errorf("Handle = %q, want %q", got.Handle, tt.wantHandle)
			}
			if tt.skip && dir.Requests("mallory.test") != 0 {
				t.Errorf("handle resolved %d times with verification skipped", dir.Requests("mallory.test"))
			}
		})
	}
}

func TestCachedResolveHandleChecksTheDocument(t *testing.T) {
	// eve.test resolves to alice's DID, but alice's document does not claim it.
	alice := resolvertest.NewIdentity(t, "did:plc:alice000000000000000000000", "alice.test", "https://pds.test")
	for _, skip := range []bool{false, true} {
		c, dir := newCached(t, resolver.Options{SkipHandleVerification: skip})
		dir.Put(alice)
		dir.SetHandle("eve.test", alice.DID)
		did, err := c.ResolveHandle(ctx, "eve.test")
		if skip {
			if err != nil || did != alice.DID {
				t.Errorf("skip: ResolveHandle(eve.test) = %s, %v; want %s", did, err, alice.DID)
			}
		} else if !errors.Is(err, resolver.ErrNotFound) {
			t.Errorf("verify: ResolveHandle(eve.test) = %s, %v; want ErrNotFound", did, err)
		}
	}
}

func TestCachedResolveHandleIsCached(t *testing.T) {
	clk := newClock()
	c, dir := newCached(t, resolver.Options{Now: clk.Now, SkipHandleVerification: true})
	ident := resolvertest.NewIdentity(t, "did:plc:hcache000000000000000000000", "hcache.test", "https://pds.test")
	dir.Put(ident)
	for range 3 {
		if did, err := c.ResolveHandle(ctx, "hcache.test"); err != nil || did != ident.DID {
			t.Fatalf("ResolveHandle = %s, %v", did, err)
		}
	}
	if n := dir.Requests("hcache.test"); n != 1 {
		t.Errorf("handle resolved %d times, want 1", n)
	}
	for range 2 {
		if _, err := c.ResolveHandle(ctx, "nobody.test"); !errors.Is(err, resolver.ErrNotFound) {
			t.Fatalf("ResolveHandle(nobody.test) = %v", err)
		}
	}
	if n := dir.Requests("nobody.test"); n != 1 {
		t.Errorf("unknown handle resolved %d times, want 1 (negative cache)", n)
	}
	clk.Advance(2 * time.Hour)
	c.ResolveHandle(ctx, "hcache.test")
	if n := dir.Requests("hcache.test"); n != 2 {
		t.Errorf("handle resolved %d times after the TTL, want 2", n)
	}
}

func TestCachedUnsupportedMethod(t *testing.T) {
	c, _ := newCached(t, resolver.Options{})
	_, err := c.Resolve(ctx, "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme")
	if !errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("Resolve(did:key) = %v, want ErrNotFound", err)
	}
}

func TestCachedResolveCancelled(t *testing.T) {
	c, dir := newCached(t, resolver.Options{})
	ident := resolvertest.NewIdentity(t, "did:plc:cancel00000000000000000000", "cancel.test", "https://pds.test")
	dir.Put(ident)
	release := dir.Hold()
	defer release()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Resolve(cctx, ident.DID); !errors.Is(err, context.Canceled) || errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("Resolve with a cancelled context = %v", err)
	}
	release()
	resolvertest.AssertIdentity(t, mustResolve(t, c, ident.DID), ident)
}

func mustResolve(t *testing.T, r resolver.Resolver, did syntax.DID) *resolver.Identity {
	t.Helper()
	ident, err := r.Resolve(ctx, did)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", did, err)
	}
	return ident
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
