package cistern

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/resolver"
	"github.com/cistern-dev/cistern/store"
)

// LookupHandle returns the DID of the tracked repo whose last resolved
// handle is h (compared without case), or an error wrapping ErrNotTracked.
// It does not resolve handles over the network: a handle that no tracked
// repo holds is not found. It is one read of the store's handle index.
func (ix *Indexer) LookupHandle(ctx context.Context, h string) (string, error) {
	hdl, err := syntax.ParseHandle(h)
	if err != nil {
		return "", invalidArg(err, "invalid handle %q", h)
	}
	want := hdl.Normalize().String()
	var did string
	err = ix.view(ctx, func(tx store.ReadTx) error {
		r, err := tx.RepoByHandle(want)
		if err == nil && r.State != store.StateDeleted {
			did = r.DID
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return "", err
	}
	if did == "" {
		return "", fmt.Errorf("%w: no tracked repo has handle %s", ErrNotTracked, want)
	}
	return did, nil
}

// DIDDocument returns the DID document of did as the resolver knows it
// (cached: a public describeRepo must not cost a PLC request each time):
// the document exactly as resolved when the resolver keeps it
// (resolver.Identity.Document; the default one does), otherwise one built
// from the identity it resolved: handle, PDS endpoint and signing key.
func (ix *Indexer) DIDDocument(ctx context.Context, did string) (json.RawMessage, error) {
	d, err := syntax.ParseDID(did)
	if err != nil {
		return nil, invalidArg(err, "invalid DID %q", did)
	}
	id, err := ix.res.Resolve(ctx, d)
	if errors.Is(err, resolver.ErrNotFound) {
		return nil, fmt.Errorf("cistern: DID document of %s: %w", did, ErrNotTracked)
	}
	if err != nil {
		return nil, fmt.Errorf("cistern: DID document of %s: %w", did, err)
	}
	if len(id.Document) > 0 {
		return slices.Clone(id.Document), nil
	}
	ident := identity.Identity{
		DID:      id.DID,
		Services: map[string]identity.ServiceEndpoint{"atproto_pds": {Type: "AtprotoPersonalDataServer", URL: id.PDS}},
	}
	if id.Handle != "" && id.Handle != syntax.HandleInvalid {
		ident.AlsoKnownAs = []string{"at://" + id.Handle.String()}
	}
	if id.SigningKey != nil {
		ident.Keys = map[string]identity.VerificationMethod{"atproto": {Type: "Multikey", PublicKeyMultibase: id.SigningKey.Multibase()}}
	}
	return json.Marshal(ident.DIDDocument())
}
