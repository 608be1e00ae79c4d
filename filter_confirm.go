package cistern

import (
	"context"
	"log/slog"

	"github.com/cistern-dev/cistern/filter"
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

// filterRemovals counts what a filter change deleted, for its log line.
type filterRemovals struct {
	records, repos  int64 // of narrowed collections
	excludedRecords int64 // of newly excluded DIDs
}

func (r *filterRemovals) add(n int64) {
	if n > 0 {
		r.records += n
		r.repos++
	}
}

// log says what a filter change deleted, at WARN: deleting stored data is
// worth seeing with the library's default logger too. Nothing is logged
// for a change that deletes nothing.
func (r *filterRemovals) log(log *slog.Logger, change filter.Change) {
	if !change.Deletes() {
		return
	}
	attrs := []any{"records", r.records + r.excludedRecords}
	if change.CollectionsNarrowed {
		attrs = append(attrs, "collectionRecords", r.records, "repos", r.repos,
			"collectionsRemoved", change.CollectionsRemoved.Strings(), "collectionsKept", change.New.Spec().Collections)
	}
	if len(change.Excluded) > 0 {
		attrs = append(attrs, "excluded", change.Excluded, "excludedRecords", r.excludedRecords)
	}
	log.Warn("filter change deleted stored records", attrs...)
}
