package cistern

import (
	"context"
	"errors"
	"fmt"

	"github.com/cistern-dev/cistern/backlinks"
	"github.com/cistern-dev/cistern/store"
)

// Backlinks returns the records that link to target (an at-uri or a DID)
// from source ("collection:path", as constellation names it:
// "app.bsky.feed.like:subject.uri"), newest first, limit at a time (0:
// backlinks.DefaultLimit, at most backlinks.MaxLimit), starting after
// cursor ("" first, then the previous page's Cursor). It needs
// Config.Backlinks: otherwise it returns an error wrapping backlinks.ErrOff,
// and while the index is being built one wrapping backlinks.ErrBuilding.
// A malformed target, source, cursor or limit returns a
// *backlinks.InputError naming it, wrapping ErrInvalidArgument.
func (ix *Indexer) Backlinks(ctx context.Context, target, source, cursor string, limit int) (*backlinks.Page, error) {
	if err := ix.checkOpen(); err != nil {
		return nil, err
	}
	p, err := ix.links.Backlinks(ctx, target, source, cursor, limit)
	return p, ix.backlinkErr(err)
}

// CountBacklinks counts the records that link to target from source, and
// the distinct DIDs among them, with the errors of Backlinks.
func (ix *Indexer) CountBacklinks(ctx context.Context, target, source string) (store.BacklinkCount, error) {
	if err := ix.checkOpen(); err != nil {
		return store.BacklinkCount{}, err
	}
	n, err := ix.links.Count(ctx, target, source)
	return n, ix.backlinkErr(err)
}

func (ix *Indexer) backlinkErr(err error) error {
	if errors.Is(err, backlinks.ErrInvalidInput) {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return ix.closedErr(err)
}
