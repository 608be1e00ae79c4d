package resolver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/resolver/resolvertest"
)

func TestCachedResolveDocumentDoesNotWaitForTheHandle(t *testing.T) {
	c, dir := newCached(t, resolver.Options{})
	ident := resolvertest.NewIdentity(t, "did:plc:hang0000000000000000000000", "hang.test", "https://pds.test")
	dir.Put(ident)
	release := dir.HoldHandles()
	defer release()

	// The handle's domain hangs: the document still answers.
	got, err := c.ResolveDocument(ctx, ident.DID)
	if err != nil {
		t.Fatalf("ResolveDocument: %v", err)
	}
	if got.Handle != "" || got.PDS != ident.PDS || got.SigningKey.Multibase() != ident.SigningKey.Multibase() {
		t.Fatalf("ResolveDocument = handle %q, PDS %q; want no handle yet, PDS %q", got.Handle, got.PDS, ident.PDS)
	}

	checked := make(chan syntax.Handle, 1)
	go func() {
		h, err := c.CheckHandle(ctx, ident.DID)
		if err != nil {
			t.Errorf("CheckHandle: %v", err)
		}
		checked <- h
	}()
	waitFor(t, func() bool { return dir.Requests("hang.test") == 1 })
	select {
	case h := <-checked:
		t.Fatalf("CheckHandle returned %q while the handle's domain hangs", h)
	default:
	}
	release()
	if h := <-checked; h != ident.Handle {
		t.Fatalf("CheckHandle = %q, want %q", h, ident.Handle)
	}
	// The verdict is cached: the document answer now carries it, and
	// Resolve needs no more requests.
	if got := mustResolveDocument(t, c, ident.DID); got.Handle != ident.Handle {
		t.Errorf("ResolveDocument after the check: handle %q, want %q", got.Handle, ident.Handle)
	}
	resolvertest.AssertIdentity(t, mustResolve(t, c, ident.DID), ident)
	if n := dir.Requests("hang.test"); n != 1 {
		t.Errorf("handle requested %d times, want 1", n)
	}
	if n := dir.Requests(ident.DID.String()); n != 1 {
		t.Errorf("document requested %d times, want 1", n)
	}
}

func TestCachedCheckHandleVerdicts(t *testing.T) {
	const did = syntax.DID("did:plc:verdict00000000000000000000")
	tests := []struct {
		name      string
		declared  syntax.Handle
		handleDID syntax.DID // what the handle resolves to; "" for not at all
		want      syntax.Handle
	}{
		{"verified", "verdict.test", did, "verdict.test"},
		{"points elsewhere", "verdict.test", "did:plc:other000000000000000000000", syntax.HandleInvalid},
		{"does not resolve", "verdict.test", "", syntax.HandleInvalid},
		{"none declared", syntax.HandleInvalid, "", syntax.HandleInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, dir := newCached(t, resolver.Options{})
			dir.Put(resolvertest.NewIdentity(t, did, tt.declared, "https://pds.test"))
			if tt.declared != syntax.HandleInvalid {
				dir.SetHandle(tt.declared, tt.handleDID)
			}
			got, err := c.CheckHandle(ctx, did)
			if err != nil || got != tt.want {
				t.Fatalf("CheckHandle = %q, %v; want %q", got, err, tt.want)
			}
			if h := mustResolveDocument(t, c, did).Handle; h != tt.want {
				t.Errorf("ResolveDocument after the check: handle %q, want %q", h, tt.want)
			}
		})
	}
}

func TestCachedHandleTimeoutIsTransient(t *testing.T) {
	clk := newClock()
	c, dir := newCached(t, resolver.Options{HandleTimeout: 50 * time.Millisecond, NegativeTTL: time.Minute, Now: clk.Now})
	ident := resolvertest.NewIdentity(t, "did:plc:slow0000000000000000000000", "slow.test", "https://pds.test")
	dir.Put(ident)
	release := dir.HoldHandles()
	defer release()

	h, err := c.CheckHandle(ctx, ident.DID)
	if err != nil || h != syntax.HandleInvalid {
		t.Fatalf("CheckHandle of a hanging handle = %q, %v; want handle.invalid after HandleTimeout", h, err)
	}
	if h := mustResolveDocument(t, c, ident.DID).Handle; h != syntax.HandleInvalid {
		t.Errorf("ResolveDocument within NegativeTTL: handle %q, want handle.invalid", h)
	}
	release()
	clk.Advance(2 * time.Minute)
	if h := mustResolveDocument(t, c, ident.DID).Handle; h != "" {
		t.Errorf("ResolveDocument after NegativeTTL: handle %q, want unknown (\"\")", h)
	}
	if h, err := c.CheckHandle(ctx, ident.DID); err != nil || h != ident.Handle {
		t.Errorf("CheckHandle once the domain answers = %q, %v; want %q", h, err, ident.Handle)
	}
}

func TestCachedPurgeForgetsTheHandleVerdict(t *testing.T) {
	c, dir := newCached(t, resolver.Options{})
	v1 := resolvertest.NewIdentity(t, "did:plc:moves00000000000000000000", "before.test", "https://pds.test")
	dir.Put(v1)
	if h, err := c.CheckHandle(ctx, v1.DID); err != nil || h != "before.test" {
		t.Fatalf("CheckHandle = %q, %v", h, err)
	}
	v2 := resolvertest.NewIdentity(t, v1.DID, "after.test", "https://pds.test")
	v2.SigningKey = v1.SigningKey
	dir.Put(v2)
	if err := c.Purge(ctx, v1.DID); err != nil {
		t.Fatal(err)
	}
	if h := mustResolveDocument(t, c, v1.DID).Handle; h != "" {
		t.Errorf("ResolveDocument after Purge: handle %q, want unknown", h)
	}
	if h, err := c.CheckHandle(ctx, v1.DID); err != nil || h != "after.test" {
		t.Errorf("CheckHandle after Purge = %q, %v; want after.test", h, err)
	}
}

func TestCachedCheckHandleCancelled(t *testing.T) {
	c, dir := newCached(t, resolver.Options{})
	ident := resolvertest.NewIdentity(t, "did:plc:cancelcheck0000000000000000", "cancelcheck.test", "https://pds.test")
	dir.Put(ident)
	mustResolveDocument(t, c, ident.DID)
	release := dir.HoldHandles()
	defer release()
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		waitFor(t, func() bool { return dir.Requests("cancelcheck.test") == 1 })
		cancel()
	}()
	if _, err := c.CheckHandle(cctx, ident.DID); !errors.Is(err, context.Canceled) {
		t.Errorf("CheckHandle with its context cancelled = %v, want context.Canceled", err)
	}
	release()
	if h := mustResolveDocument(t, c, ident.DID).Handle; h != "" {
		t.Errorf("a cancelled check left a verdict: %q", h)
	}
}

func mustResolveDocument(t *testing.T, c *resolver.Cached, did syntax.DID) *resolver.Identity {
	t.Helper()
	ident, err := c.ResolveDocument(ctx, did)
	if err != nil {
		t.Fatalf("ResolveDocument(%s): %v", did, err)
	}
	return ident
}
