package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/resolver"
)

// DIDDocument returns the DID document of did as the resolver knows it:
// the document exactly as resolved when the resolver keeps it
// (resolver.Identity.Document), otherwise one built from the identity it
// resolved: handle, PDS endpoint and signing key. An unknown DID is an
// error wrapping ErrNotTracked.
func (q *Reader) DIDDocument(ctx context.Context, did string) (json.RawMessage, error) {
	d, err := syntax.ParseDID(did)
	if err != nil {
		return nil, InvalidArg(err, "invalid DID %q", did)
	}
	id, err := q.Resolver.Resolve(ctx, d)
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
