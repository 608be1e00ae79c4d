package repos

import (
	"context"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
)

// FilterRemovals counts what ApplyFilterChange deleted.
type FilterRemovals struct {
	Records, Repos  int64 // records of narrowed collections, and the repos that held some
	ExcludedRecords int64 // records of newly excluded DIDs
}

// ApplyFilterChange carries out what a filter change asks of the repos:
// newly excluded DIDs are untracked and their records deleted; narrowed
// collections delete the records of those no longer stored (requeueing
// first any repo being backfilled, whose backfill may have read the old
// filter); widened collections requeue every tracked repo; newly listed
// DIDs are tracked. It takes each repo's lock in turn. Each step may be
// done again without harm, so a change cut short is finished by doing it
// again. It returns what it deleted, so far when it fails.
func (t *Table) ApplyFilterChange(ctx context.Context, change filter.Change) (FilterRemovals, error) {
	var removed FilterRemovals
	for _, did := range change.Excluded {
		unlock := t.Lock(did)
		n, err := t.untrack(ctx, did, true)
		unlock()
		removed.ExcludedRecords += n
		if err != nil {
			return removed, err
		}
	}
	if change.CollectionsNarrowed {
		if err := t.RequeueWhere(ctx, func(r *store.Repo) bool { return r.State == store.StateBackfilling }); err != nil {
			return removed, err
		}
		if err := t.ForEach(ctx, func(r *store.Repo) error {
			unlock := t.Lock(r.DID)
			defer unlock()
			n, err := DeleteRecords(ctx, t.st, t.w, r.DID, DeleteOptions{Which: change.Removed})
			if n > 0 {
				removed.Records += n
				removed.Repos++
			}
			return err
		}); err != nil {
			return removed, err
		}
	}
	if change.CollectionsWidened() {
		if err := t.RequeueWhere(ctx, func(*store.Repo) bool { return true }); err != nil {
			return removed, err
		}
	}
	for _, did := range change.Tracked {
		unlock := t.Lock(did)
		err := t.Track(ctx, did, ReasonExplicit)
		unlock()
		if err != nil {
			return removed, err
		}
	}
	t.kick()
	return removed, nil
}
