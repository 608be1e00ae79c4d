package cistern

import (
	"context"

	"github.com/cistern-dev/cistern/filter"
)

// Filter returns the filter in force. It is never nil.
func (ix *Indexer) Filter() *filter.Filter { return ix.filters.Current() }

func isZeroSpec(s filter.Spec) bool {
	return !s.FullNetwork && len(s.DIDs) == 0 && len(s.Signals) == 0 && len(s.Collections) == 0 && len(s.Excludes) == 0
}

// SetFilter replaces the filter, persists it, and carries out what the
// change asks for:
//   - explicitly listed DIDs not yet tracked are queued for backfill;
//   - widened Collections re-queue every tracked repo, so the newly
//     included records are backfilled (the diff emits only what is new);
//   - narrowed Collections remove the stored records of the collections no
//     longer included, each with a delete event;
//   - newly excluded DIDs are untracked and their records removed;
//   - an added signal, or FullNetwork turned on, is crawled for (see
//     Config.NoCrawl), even if it was before: a signal removed and added
//     again is crawled again, for the repos that wrote while it was off.
//
// Repos already tracked stay tracked when the change no longer selects
// them (a DID removed from DIDs, a signal removed, FullNetwork turned off):
// untrack them with Untrack, or exclude them.
//
// An invalid spec is refused with an error naming the offending entry and
// nothing changes. A change cut short (a cancelled context, a crash) is
// finished by the next change or the next Open.
func (ix *Indexer) SetFilter(ctx context.Context, spec filter.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if err := ix.checkOpen(); err != nil {
		return err
	}
	return ix.closedErr(ix.filters.Set(ctx, spec.Normalize()))
}

// ReplaceFilter is SetFilter for a caller that has to confirm deletions,
// such as a client of the HTTP API: when the change from the filter in
// force would delete stored records (it narrows the stored collections or
// excludes DIDs, see filter.Change.Deletes) and confirmDelete is false, it
// is refused with a *filter.DeleteError (wrapping
// filter.ErrDeleteNotConfirmed) naming what would be deleted, and nothing
// changes. Otherwise it does what SetFilter does. The check and the change
// happen under the same lock as every filter change, so a concurrent change
// cannot slip between them.
func (ix *Indexer) ReplaceFilter(ctx context.Context, spec filter.Spec, confirmDelete bool) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if err := ix.checkOpen(); err != nil {
		return err
	}
	return ix.closedErr(ix.filters.Replace(ctx, spec.Normalize(), confirmDelete))
}

// PatchFilter applies a patch to the filter in force, as SetFilter, and
// returns the spec now in force. Adding collections to a filter that stores
// every collection changes nothing; a patch that would delete stored
// records (narrowed collections, new excludes) is refused with a
// *filter.DeleteError unless p.ConfirmDelete is set (see filter.Spec.Apply).
func (ix *Indexer) PatchFilter(ctx context.Context, p filter.Patch) (filter.Spec, error) {
	if err := p.Validate(); err != nil {
		return filter.Spec{}, err
	}
	if err := ix.checkOpen(); err != nil {
		return filter.Spec{}, err
	}
	next, err := ix.filters.Patch(ctx, p)
	return next, ix.closedErr(err)
}
