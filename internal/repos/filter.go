package repos

import (
	"context"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
)

// ApplyFilterChange carries out what a filter change asks of the repos:
// newly excluded DIDs are untracked and their records deleted; narrowed
// collections delete the records of those no longer stored (requeueing
// first any repo being backfilled, whose backfill may have read the old
// filter); widened collections requeue every tracked repo; newly listed
// DIDs are tracked. It takes each repo's lock in turn. Each step may be
// done again without harm, so a change cut short is finished by doing it
// again.
func (t *Table) ApplyFilterChange(ctx context.Context, change filter.Change) error {
	for _, did := range change.Excluded {
		unlock := t.Lock(did)
		err := t.Untrack(ctx, did, true)
		unlock()
		if err != nil {
			return err
		}
	}
	if change.CollectionsNarrowed {
		if err := t.RequeueWhere(ctx, func(r *store.Repo) bool { return r.State == store.StateBackfilling }); err != nil {
			return err
		}
		if err := t.ForEach(ctx, func(r *store.Repo) error {
			unlock := t.Lock(r.DID)
			defer unlock()
			_, err := DeleteRecords(ctx, t.st, t.w, r.DID, DeleteOptions{Which: change.Removed})
			return err
		}); err != nil {
			return err
		}
	}
	if change.CollectionsWidened() {
		if err := t.RequeueWhere(ctx, func(*store.Repo) bool { return true }); err != nil {
			return err
		}
	}
	for _, did := range change.Tracked {
		unlock := t.Lock(did)
		err := t.Track(ctx, did, ReasonExplicit)
		unlock()
		if err != nil {
			return err
		}
	}
	t.kick()
	return nil
}
