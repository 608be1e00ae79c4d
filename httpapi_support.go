package cistern

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cistern-dev/cistern/store"
)

// Gatherer returns the Indexer's own Prometheus metrics (firehose messages,
// lag and cursors; live commits applied, skipped and rejected by reason),
// for a host to serve or merge with its own registry. Package httpapi
// serves them at /metrics along with store and backfill gauges.
func (ix *Indexer) Gatherer() prometheus.Gatherer { return ix.metrics.reg }

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
	err = ix.st.View(ctx, func(tx store.ReadTx) error {
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

// DIDDocument fetches the current DID document of did (from the PLC
// directory of Config.PLCURL, or over HTTPS for did:web), as JSON.
func (ix *Indexer) DIDDocument(ctx context.Context, did string) (json.RawMessage, error) {
	d, err := syntax.ParseDID(did)
	if err != nil {
		return nil, invalidArg(err, "invalid DID %q", did)
	}
	dir := identity.BaseDirectory{PLCURL: ix.cfg.PLCURL, SkipHandleVerification: true}
	if ix.cfg.HTTPClient != nil {
		dir.HTTPClient = *ix.cfg.HTTPClient
	} else {
		dir.HTTPClient = *http.DefaultClient
	}
	doc, err := dir.ResolveDIDRaw(ctx, d)
	if errors.Is(err, identity.ErrDIDNotFound) {
		return nil, fmt.Errorf("cistern: DID document of %s: %w", did, ErrNotTracked)
	}
	if err != nil {
		return nil, fmt.Errorf("cistern: DID document of %s: %w", did, err)
	}
	return doc, nil
}
