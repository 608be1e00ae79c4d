package pgstore

import (
	"errors"
	"fmt"

	"github.com/cistern-dev/cistern/store"
)

// errNoBacklinks marks the backlink index methods this store does not
// implement yet.
var errNoBacklinks = fmt.Errorf("pgstore: backlink index: %w", errors.ErrUnsupported)

// ScanBacklinks implements store.ReadTx.
func (t *tx) ScanBacklinks(q store.BacklinkScan, fn func(b *store.Backlink) (bool, error)) error {
	return errNoBacklinks
}

// CountBacklinks implements store.ReadTx.
func (t *tx) CountBacklinks(target, collection, path string) (store.BacklinkCount, error) {
	return store.BacklinkCount{}, errNoBacklinks
}

// ScanLinkSources implements store.ReadTx.
func (t *tx) ScanLinkSources(target string, fn func(collection, path string, n store.BacklinkCount) (bool, error)) error {
	return errNoBacklinks
}

// PutLinks implements store.Tx.
func (t *tx) PutLinks(did, collection, rkey string, seq uint64, links []store.Link) error {
	return errNoBacklinks
}
