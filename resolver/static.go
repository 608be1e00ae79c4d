package resolver

import (
	"context"
	"fmt"
	"sync"

	"github.com/bluesky-social/indigo/atproto/syntax"
)

// Static is an in-memory Resolver for tests: it answers from the identities
// it was given and nothing else. It has no cache, so Purge only has to
// succeed. The zero value is not usable; call NewStatic.
type Static struct {
	mu     sync.RWMutex
	byDID  map[syntax.DID]Identity
	byName map[syntax.Handle]syntax.DID // normalized handle -> DID
}

// NewStatic returns an empty Static resolver.
func NewStatic() *Static {
	return &Static{byDID: make(map[syntax.DID]Identity), byName: make(map[syntax.Handle]syntax.DID)}
}

// Put adds or replaces the identity of ident.DID. Its handle, unless it is
// empty or "handle.invalid", resolves to ident.DID from now on (and the
// DID's previous handle no longer does). Static keeps its own copy of ident.
func (s *Static) Put(ident *Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(ident.DID)
	id := *ident
	if id.Handle == "" {
		id.Handle = syntax.HandleInvalid
	}
	s.byDID[id.DID] = id
	if h := id.Handle.Normalize(); !h.IsInvalidHandle() {
		s.byName[h] = id.DID
	}
}

// Remove forgets did and its handle: both resolve to ErrNotFound from now on.
func (s *Static) Remove(did syntax.DID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(did)
}

func (s *Static) removeLocked(did syntax.DID) {
	old, ok := s.byDID[did]
	if !ok {
		return
	}
	delete(s.byDID, did)
	if h := old.Handle.Normalize(); s.byName[h] == did {
		delete(s.byName, h)
	}
}

// Resolve returns a copy of the identity put for did, an error wrapping
// ErrIncomplete if it lacks a PDS or signing key, or one wrapping
// ErrNotFound if none was put.
func (s *Static) Resolve(ctx context.Context, did syntax.DID) (*Identity, error) {
	s.mu.RLock()
	id, ok := s.byDID[did]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("resolver: resolve %s: %w", did, ErrNotFound)
	}
	if id.PDS == "" || id.SigningKey == nil {
		return nil, fmt.Errorf("resolver: resolve %s: %w", did, ErrIncomplete)
	}
	return &id, nil
}

// ResolveHandle returns the DID whose identity carries handle h (compared
// case-insensitively), or an error wrapping ErrNotFound.
func (s *Static) ResolveHandle(ctx context.Context, h syntax.Handle) (syntax.DID, error) {
	s.mu.RLock()
	did, ok := s.byName[h.Normalize()]
	s.mu.RUnlock()
	if !ok {
		return "", fmt.Errorf("resolver: resolve handle %s: %w", h, ErrNotFound)
	}
	return did, nil
}

// Purge does nothing: Static caches nothing. It returns nil.
func (s *Static) Purge(ctx context.Context, did syntax.DID) error { return nil }
