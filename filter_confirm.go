package cistern

import (
	"context"
	"log/slog"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/repos"
)

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
	ix.filtMu.Lock()
	defer ix.filtMu.Unlock()
	spec = spec.Normalize()
	if !confirmDelete {
		next, err := filter.Compile(spec)
		if err != nil {
			return err
		}
		if err := filter.DiffFilters(ix.Filter(), next).CheckConfirmed(false); err != nil {
			return err
		}
	}
	return ix.closedErr(ix.setFilterLocked(ctx, spec))
}

// logRemovals says what a filter change deleted, at WARN: deleting stored data is
// worth seeing with the library's default logger too. Nothing is logged
// for a change that deletes nothing.
func logRemovals(log *slog.Logger, change filter.Change, r repos.FilterRemovals) {
	if !change.Deletes() {
		return
	}
	attrs := []any{"records", r.Records + r.ExcludedRecords}
	if change.CollectionsNarrowed {
		attrs = append(attrs, "collectionRecords", r.Records, "repos", r.Repos,
			"collectionsRemoved", change.CollectionsRemoved.Strings(), "collectionsKept", change.New.Spec().Collections)
	}
	if len(change.Excluded) > 0 {
		attrs = append(attrs, "excluded", change.Excluded, "excludedRecords", r.ExcludedRecords)
	}
	log.Warn("filter change deleted stored records", attrs...)
}
