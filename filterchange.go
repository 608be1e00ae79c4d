package cistern

import (
	"context"
	"errors"
	"fmt"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/crawl"
	"github.com/cistern-dev/cistern/store"
)

// Filter returns the filter in force. It is never nil.
func (ix *Indexer) Filter() *filter.Filter {
	return ix.filt.Load()
}

// loadFilter reads the persisted filter, then applies Config.Filter if set.
func (ix *Indexer) loadFilter(ctx context.Context) error {
	var spec filter.Spec
	err := ix.st.View(ctx, func(tx store.ReadTx) error {
		v, err := tx.Meta(metaFilter)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		spec, err = filter.DecodeSpec(v)
		return err
	})
	if err != nil {
		return fmt.Errorf("cistern: read persisted filter: %w", err)
	}
	f, err := filter.Compile(spec)
	if err != nil {
		return fmt.Errorf("cistern: persisted filter: %w", err)
	}
	ix.filt.Store(f)
	if _, unfinished, err := ix.unfinishedFilterChange(ctx); err != nil {
		return err
	} else if unfinished && !ix.cfg.ReadOnly {
		// The last change was cut short: finish it before anything else.
		ix.filtMu.Lock()
		err := ix.setFilterLocked(ctx, spec)
		ix.filtMu.Unlock()
		if err != nil {
			return fmt.Errorf("cistern: finish an interrupted filter change: %w", err)
		}
	}
	if isZeroSpec(ix.cfg.Filter) {
		return nil
	}
	return ix.SetFilter(ctx, ix.cfg.Filter)
}

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
// nothing changes.
func (ix *Indexer) SetFilter(ctx context.Context, spec filter.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if err := ix.checkOpen(); err != nil {
		return err
	}
	ix.filtMu.Lock()
	defer ix.filtMu.Unlock()
	return ix.closedErr(ix.setFilterLocked(ctx, spec.Normalize()))
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
	ix.filtMu.Lock()
	defer ix.filtMu.Unlock()
	next, err := ix.Filter().Spec().Apply(p)
	if err != nil {
		return filter.Spec{}, err
	}
	next = next.Normalize()
	return next, ix.closedErr(ix.setFilterLocked(ctx, next))
}

// setFilterLocked puts spec in force and carries out what the change asks
// for. The spec it changes from is persisted (metaFilterFrom) with the new
// one and removed only once every effect is done, so a change cut short (a
// cancelled context, a failed write, a crash) is finished by the next
// SetFilter or Open, diffing from where it started.
func (ix *Indexer) setFilterLocked(ctx context.Context, spec filter.Spec) error {
	nf, err := filter.Compile(spec)
	if err != nil {
		return err
	}
	from := ix.Filter()
	fromSpec, unfinished, err := ix.unfinishedFilterChange(ctx)
	if err != nil {
		return err
	}
	if unfinished {
		if from, err = filter.Compile(fromSpec); err != nil {
			return fmt.Errorf("cistern: filter of an unfinished change: %w", err)
		}
	}
	change := filter.DiffFilters(from, nf)
	enc, err := spec.Encode()
	if err != nil {
		return err
	}
	fromEnc, err := from.Spec().Encode()
	if err != nil {
		return err
	}
	if err := ix.write(ctx, func(tx store.Tx) error {
		if err := tx.PutMeta(metaFilter, enc); err != nil {
			return err
		}
		if err := tx.PutMeta(metaFilterFrom, fromEnc); err != nil {
			return err
		}
		return crawl.Reset(tx, from.Spec(), spec)
	}); err != nil {
		return fmt.Errorf("cistern: persist filter: %w", err)
	}
	ix.filt.Store(nf)
	removed, err := ix.repos.ApplyFilterChange(ctx, change)
	logRemovals(ix.log, change, removed)
	if err != nil {
		return err
	}
	ix.crawler.Kick()
	if err := ix.write(ctx, func(tx store.Tx) error { return tx.DeleteMeta(metaFilterFrom) }); err != nil {
		return fmt.Errorf("cistern: finish filter change: %w", err)
	}
	return nil
}

// unfinishedFilterChange returns the spec an unfinished filter change
// started from, if there is one.
func (ix *Indexer) unfinishedFilterChange(ctx context.Context) (filter.Spec, bool, error) {
	var spec filter.Spec
	found := false
	err := ix.st.View(ctx, func(tx store.ReadTx) error {
		v, err := tx.Meta(metaFilterFrom)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		spec, err = filter.DecodeSpec(v)
		return err
	})
	return spec, found, err
}
