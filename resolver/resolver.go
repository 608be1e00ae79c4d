// Package resolver finds where a repo lives and how its commits are signed.
//
// A Resolver turns a DID into an Identity: the repo's PDS endpoint, its
// verified handle and its current signing key. The default implementation,
// Cached, resolves did:plc through a PLC directory and did:web over HTTPS
// (both through indigo's atproto/identity), verifies handles both ways, and
// keeps a bounded, expiring cache that the indexer purges when the firehose
// announces an #identity change. Static is an in-memory Resolver for tests.
//
// Any Resolver can prove itself with the conformance suite in
// resolver/resolvertest.
package resolver

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/bluesky-social/indigo/atproto/atcrypto"
	"github.com/bluesky-social/indigo/atproto/syntax"
)

var (
	// ErrNotFound is wrapped by errors for a DID or handle that does not
	// exist (the directory says so), as opposed to one that could not be
	// looked up right now.
	ErrNotFound = errors.New("resolver: not found")
	// ErrIncomplete is wrapped by errors for a DID whose document has no
	// atproto PDS endpoint (#atproto_pds) or no usable atproto signing key
	// (#atproto): the repo cannot be fetched or verified.
	ErrIncomplete = errors.New("resolver: DID document lacks a PDS endpoint or signing key")
)

// Identity is what the indexer needs to know about a repo's account.
type Identity struct {
	// DID is the account's permanent identifier.
	DID syntax.DID
	// Handle is the account's handle if it was verified both ways (the DID
	// document claims it and it resolves back to DID), or
	// syntax.HandleInvalid ("handle.invalid") otherwise. Resolve always
	// sets it; HandleChecker.ResolveDocument leaves it empty when the
	// handle has not been checked yet.
	Handle syntax.Handle
	// PDS is the URL of the account's PDS (the #atproto_pds service
	// endpoint), such as "https://pds.example.com".
	PDS string
	// SigningKey verifies the account's repo commits (the #atproto key).
	SigningKey atcrypto.PublicKey
	// Document is the DID document exactly as resolved (JSON), when the
	// implementation keeps it; nil otherwise. Cached keeps it (about 1 KB
	// per cached identity). It may be shared between copies of the
	// Identity: do not modify it.
	Document json.RawMessage
}

// Resolver finds where a repo lives and how its commits are signed.
//
// Implementations must be safe for concurrent use. Resolve may serve from a
// cache; after Purge(did) returns, the next Resolve of that DID must not
// return what was cached before. The Identity returned belongs to the caller.
//
// Errors: an unknown DID or handle returns an error wrapping ErrNotFound; a
// network or server failure returns an error that does not wrap ErrNotFound
// (the caller may retry later); a DID document without a PDS endpoint or
// signing key returns an error wrapping ErrIncomplete.
type Resolver interface {
	// Resolve returns the current identity of did.
	Resolve(ctx context.Context, did syntax.DID) (*Identity, error)
	// ResolveHandle returns the DID that the handle h points to. When the
	// implementation verifies handles, it also checks that the DID's
	// document claims h, and returns ErrNotFound when it does not.
	ResolveHandle(ctx context.Context, h syntax.Handle) (syntax.DID, error)
	// Purge forgets whatever is cached about did (and its handle). Purging
	// a DID that is not cached is not an error.
	Purge(ctx context.Context, did syntax.DID) error
}

// HandleChecker is a Resolver that can answer from a DID document without
// waiting for the check of the handle, and check the handle on its own.
//
// Backfill and live verification need only the PDS endpoint and the
// signing key; the bidirectional handle check costs a DNS lookup and an
// HTTPS request to the handle's own domain, which may be slow or dead. The
// indexer therefore resolves with ResolveDocument on its critical paths and
// runs CheckHandle beside them, with its own concurrency, writing the
// handle when it is known. A Resolver that does not implement
// HandleChecker is called with Resolve and its handle is taken as final.
//
// Implementations must be safe for concurrent use. After Purge(did), neither
// method may return what was cached about did before.
type HandleChecker interface {
	Resolver
	// ResolveDocument returns did's identity as Resolve does, except that
	// Handle is empty when the handle has not been checked yet (it is
	// HandleInvalid when the document declares no handle, and a verdict
	// of an earlier check while the implementation keeps it). Errors are
	// those of Resolve.
	ResolveDocument(ctx context.Context, did syntax.DID) (*Identity, error)
	// CheckHandle checks the handle did's document declares and returns
	// it if it resolves back to did, or HandleInvalid if it does not (or
	// could not be checked). Later ResolveDocument calls may return the
	// verdict. It fails when did does not resolve (the errors of Resolve)
	// or ctx ends.
	CheckHandle(ctx context.Context, did syntax.DID) (syntax.Handle, error)
}

var (
	_ Resolver      = (*Cached)(nil)
	_ Resolver      = (*Static)(nil)
	_ HandleChecker = (*Cached)(nil)
)
