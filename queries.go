package cistern

import (
	"context"
	"errors"
	"fmt"

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
