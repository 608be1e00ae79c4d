// Package resolvertest is a conformance suite for resolver.Resolver
// implementations, and a fake identity network (Directory) to run resolvers
// against without leaving the machine.
//
// An implementation proves itself with:
//
//	func TestConformance(t *testing.T) {
//		resolvertest.Run(t, func(t *testing.T) resolvertest.Harness {
//			r := myresolver.New(...)
//			return resolvertest.Harness{Resolver: r, Put: ..., Remove: ...}
//		})
//	}
package resolvertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/resolver"
)

// Harness is one resolver under test, with the means to change the world it
// resolves from.
type Harness struct {
	// Resolver is the implementation under test.
	Resolver resolver.Resolver
	// Put publishes ident as the current identity of ident.DID, replacing
	// any earlier one: its DID document, and its handle resolving to the
	// DID. The Resolver may go on serving what it cached until Purge.
	Put func(ident *resolver.Identity)
	// Remove unpublishes did and its handle: the network no longer knows
	// them.
	Remove func(did syntax.DID)
}

// Run runs the conformance suite. newHarness is called once per subtest
// and must return a Resolver that knows no identities yet. Handles used by
// the suite end in ".test"; DIDs are did:plc and did:web under ".test".
func Run(t *testing.T, newHarness func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"ResolveKnown", testResolveKnown},
		{"ResolveUnknown", testResolveUnknown},
		{"ResolveIncomplete", testResolveIncomplete},
		{"PurgeMakesChangesVisible", testPurgeMakesChangesVisible},
		{"PurgeMakesRemovalVisible", testPurgeMakesRemovalVisible},
		{"PurgeUnknown", testPurgeUnknown},
		{"ReturnedIdentityIsCallers", testReturnedIdentityIsCallers},
		{"ResolveHandle", testResolveHandle},
		{"Concurrent", testConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newHarness(t))
		})
	}
}

// NewIdentity returns a complete identity for did with a freshly generated
// K-256 signing key.
func NewIdentity(t testing.TB, did syntax.DID, handle syntax.Handle, pds string) *resolver.Identity {
	t.Helper()
	priv, err := atcrypto.GeneratePrivateKeyK256()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := priv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return &resolver.Identity{DID: did, Handle: handle, PDS: pds, SigningKey: pub}
}

// AssertIdentity fails the test unless got describes the same identity as
// want: DID, handle, PDS and signing key.
func AssertIdentity(t testing.TB, got, want *resolver.Identity) {
	t.Helper()
	if got == nil {
		t.Fatalf("identity of %s is nil", want.DID)
	}
	if got.DID != want.DID {
		t.Errorf("DID = %s, want %s", got.DID, want.DID)
	}
	if got.Handle != want.Handle {
		t.Errorf("%s: Handle = %q, want %q", want.DID, got.Handle, want.Handle)
	}
	if got.PDS != want.PDS {
		t.Errorf("%s: PDS = %q, want %q", want.DID, got.PDS, want.PDS)
	}
	if got.SigningKey == nil || !got.SigningKey.Equal(want.SigningKey) {
		t.Errorf("%s: SigningKey = %v, want %v", want.DID, got.SigningKey, want.SigningKey)
	}
}

func resolve(t *testing.T, r resolver.Resolver, did syntax.DID) *resolver.Identity {
	t.Helper()
	ident, err := r.Resolve(context.Background(), did)
	if err != nil {
		t.Fatalf("Resolve(%s): %v", did, err)
	}
	return ident
}

func purge(t *testing.T, r resolver.Resolver, did syntax.DID) {
	t.Helper()
	if err := r.Purge(context.Background(), did); err != nil {
		t.Fatalf("Purge(%s): %v", did, err)
	}
}

func testResolveKnown(t *testing.T, h Harness) {
	plc := NewIdentity(t, "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "alice.test", "https://pds.alice.test")
	web := NewIdentity(t, "did:web:carol.test", "carol.test", "https://pds.carol.test")
	h.Put(plc)
	h.Put(web)
	AssertIdentity(t, resolve(t, h.Resolver, plc.DID), plc)
	AssertIdentity(t, resolve(t, h.Resolver, web.DID), web)
	// A second resolve (maybe from a cache) says the same.
	AssertIdentity(t, resolve(t, h.Resolver, plc.DID), plc)
}

func testResolveUnknown(t *testing.T, h Harness) {
	for _, did := range []syntax.DID{"did:plc:unknown00000000000000000", "did:web:nobody.test"} {
		for range 2 { // the second answer may come from a negative cache
			ident, err := h.Resolver.Resolve(context.Background(), did)
			if !errors.Is(err, resolver.ErrNotFound) {
				t.Errorf("Resolve(%s) = %v, %v; want ErrNotFound", did, ident, err)
			}
			if errors.Is(err, resolver.ErrIncomplete) {
				t.Errorf("Resolve(%s): %v wraps ErrIncomplete", did, err)
			}
		}
	}
}

func testResolveIncomplete(t *testing.T, h Harness) {
	noPDS := NewIdentity(t, "did:plc:nopds000000000000000000000", "nopds.test", "")
	noKey := NewIdentity(t, "did:plc:nokey000000000000000000000", "nokey.test", "https://pds.test")
	noKey.SigningKey = nil
	h.Put(noPDS)
	h.Put(noKey)
	for _, did := range []syntax.DID{noPDS.DID, noKey.DID} {
		ident, err := h.Resolver.Resolve(context.Background(), did)
		if !errors.Is(err, resolver.ErrIncomplete) {
			t.Errorf("Resolve(%s) = %v, %v; want ErrIncomplete", did, ident, err)
		}
		if errors.Is(err, resolver.ErrNotFound) {
			t.Errorf("Resolve(%s): %v wraps ErrNotFound", did, err)
		}
	}
}

func testPurgeMakesChangesVisible(t *testing.T, h Harness) {
	before := NewIdentity(t, "did:plc:changes00000000000000000000", "before.test", "https://pds1.test")
	h.Put(before)
	AssertIdentity(t, resolve(t, h.Resolver, before.DID), before)
	if did, err := h.Resolver.ResolveHandle(context.Background(), before.Handle); err != nil || did != before.DID {
		t.Fatalf("ResolveHandle(%s) = %s, %v", before.Handle, did, err)
	}

	// New handle, new PDS, new key: what an #identity event announces.
	after := NewIdentity(t, before.DID, "after.test", "https://pds2.test")
	h.Put(after)
	purge(t, h.Resolver, before.DID)
	AssertIdentity(t, resolve(t, h.Resolver, before.DID), after)

	if did, err := h.Resolver.ResolveHandle(context.Background(), after.Handle); err != nil || did != after.DID {
		t.Errorf("ResolveHandle(%s) after purge = %s, %v", after.Handle, did, err)
	}
	if did, err := h.Resolver.ResolveHandle(context.Background(), before.Handle); !errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("ResolveHandle(%s) of the old handle after purge = %s, %v; want ErrNotFound", before.Handle, did, err)
	}
}

func testPurgeMakesRemovalVisible(t *testing.T, h Harness) {
	ident := NewIdentity(t, "did:plc:removed00000000000000000000", "removed.test", "https://pds.test")
	h.Put(ident)
	AssertIdentity(t, resolve(t, h.Resolver, ident.DID), ident)
	h.Remove(ident.DID)
	purge(t, h.Resolver, ident.DID)
	if got, err := h.Resolver.Resolve(context.Background(), ident.DID); !errors.Is(err, resolver.ErrNotFound) {
		t.Errorf("Resolve after Remove and Purge = %v, %v; want ErrNotFound", got, err)
	}

	// And back again: a negative answer is purged too.
	h.Put(ident)
	purge(t, h.Resolver, ident.DID)
	AssertIdentity(t, resolve(t, h.Resolver, ident.DID), ident)
}

func testPurgeUnknown(t *testing.T, h Harness) {
	purge(t, h.Resolver, "did:plc:nevercached000000000000000")
}

func testReturnedIdentityIsCallers(t *testing.T, h Harness) {
	ident := NewIdentity(t, "did:plc:mutable00000000000000000000", "mutable.test", "https://pds.test")
	h.Put(ident)
	got := resolve(t, h.Resolver, ident.DID)
	got.PDS = "https://elsewhere.test"
	got.Handle = "elsewhere.test"
	AssertIdentity(t, resolve(t, h.Resolver, ident.DID), ident)
}

func testResolveHandle(t *testing.T, h Harness) {
	ident := NewIdentity(t, "did:plc:handles00000000000000000000", "handles.test", "https://pds.test")
	h.Put(ident)
	ctx := context.Background()
	for _, handle := range []syntax.Handle{"handles.test", "Handles.TEST"} {
		did, err := h.Resolver.ResolveHandle(ctx, handle)
		if err != nil || did != ident.DID {
			t.Errorf("ResolveHandle(%s) = %s, %v; want %s", handle, did, err, ident.DID)
		}
	}
	for _, handle := range []syntax.Handle{"nobody.test", syntax.HandleInvalid} {
		did, err := h.Resolver.ResolveHandle(ctx, handle)
		if !errors.Is(err, resolver.ErrNotFound) {
			t.Errorf("ResolveHandle(%s) = %s, %v; want ErrNotFound", handle, did, err)
		}
	}
}

func testConcurrent(t *testing.T, h Harness) {
	const nIdent, nWorkers, nRounds = 4, 8, 25
	idents := make([]*resolver.Identity, nIdent)
	for i := range idents {
		idents[i] = NewIdentity(t, syntax.DID(fmt.Sprintf("did:plc:concurrent%017d", i)),
			syntax.Handle(fmt.Sprintf("c%d.test", i)), fmt.Sprintf("https://pds%d.test", i))
		h.Put(idents[i])
	}
	var wg sync.WaitGroup
	errs := make(chan error, nWorkers*nRounds)
	for w := range nWorkers {
		wg.Go(func() {
			ctx := context.Background()
			for r := range nRounds {
				want := idents[(w+r)%nIdent]
				if r%5 == 4 {
					if err := h.Resolver.Purge(ctx, want.DID); err != nil {
						errs <- fmt.Errorf("Purge(%s): %w", want.DID, err)
					}
				}
				got, err := h.Resolver.Resolve(ctx, want.DID)
				switch {
				case err != nil:
					errs <- fmt.Errorf("Resolve(%s): %w", want.DID, err)
				case got.DID != want.DID || got.PDS != want.PDS || got.Handle != want.Handle ||
					got.SigningKey == nil || !got.SigningKey.Equal(want.SigningKey):
					errs <- fmt.Errorf("Resolve(%s) = %+v, want %+v", want.DID, got, want)
				}
				if did, err := h.Resolver.ResolveHandle(ctx, want.Handle); err != nil || did != want.DID {
					errs <- fmt.Errorf("ResolveHandle(%s) = %s, %v", want.Handle, did, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
