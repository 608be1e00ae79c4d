package cistern

import (
	"context"
	"encoding/json"
)

// LookupHandle returns the DID of the tracked repo whose last resolved
// handle is h (compared without case), or an error wrapping ErrNotTracked.
// It does not resolve handles over the network: a handle that no tracked
// repo holds is not found. It is one read of the store's handle index.
func (ix *Indexer) LookupHandle(ctx context.Context, h string) (string, error) {
	return ix.q.LookupHandle(ctx, h)
}

// DIDDocument returns the DID document of did as the resolver knows it
// (cached: a public describeRepo must not cost a PLC request each time):
// the document exactly as resolved when the resolver keeps it
// (resolver.Identity.Document; the default one does), otherwise one built
// from the identity it resolved: handle, PDS endpoint and signing key.
func (ix *Indexer) DIDDocument(ctx context.Context, did string) (json.RawMessage, error) {
	return ix.q.DIDDocument(ctx, did)
}
