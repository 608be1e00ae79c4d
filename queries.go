package cistern

import (
	"context"
	"errors"
	"fmt"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/store"
)

// view runs fn in a read transaction of the store. After Close it fails
// with an error wrapping ErrClosed (and the store's own error, when it gave
// one), whether or not the store itself is closed.
func (ix *Indexer) view(ctx context.Context, fn func(tx store.ReadTx) error) error {
	if ix.closed.Load() {
		return ErrClosed
	}
	return ix.closedErr(ix.st.View(ctx, fn))
}

// closedErr returns err, wrapped with ErrClosed when the Indexer was closed
// (a store, log or writer that stopped under a call says so in its own
// words).
func (ix *Indexer) closedErr(err error) error {
	if err != nil && ix.closed.Load() && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// checkOpen returns ErrClosed after Close.
func (ix *Indexer) checkOpen() error {
	if ix.closed.Load() {
		return ErrClosed
	}
	return nil
}

// repoDID turns the repo argument of a query into a DID: a DID as it is
// (normalized), or the handle of a tracked repo, looked up as LookupHandle
// does (the store's handle index, without a network request). This is how
// the HTTP API reads its "repo" parameters too. A handle no tracked repo
// holds gives an error wrapping ErrNotTracked; a string that is neither
// gives one wrapping ErrInvalidArgument.
func (ix *Indexer) repoDID(ctx context.Context, repo string) (string, error) {
	id, err := syntax.ParseAtIdentifier(repo)
	if err != nil {
		return "", invalidArg(err, "invalid DID or handle %q", repo)
	}
	if d, err := id.AsDID(); err == nil {
		return d.String(), nil
	}
	h, _ := id.AsHandle()
	return ix.LookupHandle(ctx, h.String())
}

// knownRepo reports whether the indexer knows did: it is tracked, or it
// still has records stored (untracked without deleting its data).
func knownRepo(tx store.ReadTx, did string) (bool, error) {
	_, err := tx.Repo(did)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	n, err := tx.CountRecords(did, "")
	return n > 0, err
}
