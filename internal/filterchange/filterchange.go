// Package filterchange holds the filter in force and changes it.
//
// A Changer keeps the compiled filter that every path reads (live ingestion,
// backfill, the crawl, queries) and is the one place that replaces it. A
// change is persisted with the spec it changes from, carried out (repos
// tracked, requeued or deleted through internal/repos, discovery crawls reset
// through internal/crawl), and only then marked finished, so a change cut short
// by a cancelled context, a failed write or a crash is finished by the next
// change or by Load at the next Open. Changes are serialised; the root
// package's SetFilter, PatchFilter and ReplaceFilter validate their input and
// call in here.
package filterchange

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/crawl"
	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/store"
)

// Meta keys of the persisted filter.
const (
	// MetaFilter holds the encoded spec in force.
	MetaFilter = "filter"
	// MetaFrom holds the spec an unfinished change started from.
	MetaFrom = "filter/changing-from"
)

// Deps are what a Changer touches.
type Deps struct {
	// Store is read for the persisted filter.
	Store store.Store
	// Writer carries every write (the one write path).
	Writer repos.Writer
	// Repos carries out a change's effects on tracked repos.
	Repos *repos.Table
	// Kick, if set, wakes the discovery crawler after a change.
	Kick func()
	// Logger receives what a change deleted.
	Logger *slog.Logger
}

// Changer holds the filter in force and is the one place changing it. It is
// safe for concurrent use.
type Changer struct {
	deps Deps
	cur  atomic.Pointer[filter.Filter]
	mu   sync.Mutex // serialises changes
}

// New returns a Changer with the empty filter in force (nothing tracked);
// Load reads the persisted one.
func New(deps Deps) *Changer {
	c := &Changer{deps: deps}
	empty, _ := filter.Compile(filter.Spec{})
	c.cur.Store(empty)
	return c
}

// Current returns the filter in force. It is never nil.
func (c *Changer) Current() *filter.Filter { return c.cur.Load() }

// Load puts the persisted filter in force and, unless readOnly, finishes a
// change that was cut short.
func (c *Changer) Load(ctx context.Context, readOnly bool) error {
	spec, _, err := c.persisted(ctx, MetaFilter)
	if err != nil {
		return fmt.Errorf("cistern: read persisted filter: %w", err)
	}
	f, err := filter.Compile(spec)
	if err != nil {
		return fmt.Errorf("cistern: persisted filter: %w", err)
	}
	c.cur.Store(f)
	if _, unfinished, err := c.Unfinished(ctx); err != nil {
		return err
	} else if unfinished && !readOnly {
		// The last change was cut short: finish it before anything else.
		if err := c.Set(ctx, spec); err != nil {
			return fmt.Errorf("cistern: finish an interrupted filter change: %w", err)
		}
	}
	return nil
}

// Adopt puts in force the persisted filter (encoded; nil for none) that
// another process changed, without carrying out anything: for a read-only
// replica, whose indexing process does the work.
func (c *Changer) Adopt(encoded []byte) error {
	var spec filter.Spec
	if encoded != nil {
		var err error
		if spec, err = filter.DecodeSpec(encoded); err != nil {
			return err
		}
	}
	f, err := filter.Compile(spec)
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	c.cur.Store(f)
	return nil
}

// Set puts spec (validated and normalized by the caller) in force and
// carries out what the change asks for.
func (c *Changer) Set(ctx context.Context, spec filter.Spec) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.setLocked(ctx, spec)
}

// Replace is Set for a caller that has to confirm deletions: unless
// confirmDelete, a change that would delete stored records is refused with
// a *filter.DeleteError and nothing changes. The check and the change
// happen under the one lock of every change.
func (c *Changer) Replace(ctx context.Context, spec filter.Spec, confirmDelete bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !confirmDelete {
		next, err := filter.Compile(spec)
		if err != nil {
			return err
		}
		if err := filter.DiffFilters(c.Current(), next).CheckConfirmed(false); err != nil {
			return err
		}
	}
	return c.setLocked(ctx, spec)
}

// Patch applies p (validated by the caller) to the spec in force, as Set,
// and returns the spec now in force.
func (c *Changer) Patch(ctx context.Context, p filter.Patch) (filter.Spec, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	next, err := c.Current().Spec().Apply(p)
	if err != nil {
		return filter.Spec{}, err
	}
	next = next.Normalize()
	return next, c.setLocked(ctx, next)
}

// setLocked puts spec in force and carries out what the change asks for.
// The spec it changes from is persisted (MetaFrom) with the new one and
// removed only once every effect is done, so a change cut short is
// finished by the next change or Load, diffing from where it started.
func (c *Changer) setLocked(ctx context.Context, spec filter.Spec) error {
	nf, err := filter.Compile(spec)
	if err != nil {
		return err
	}
	from := c.Current()
	fromSpec, unfinished, err := c.Unfinished(ctx)
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
	if err := c.deps.Writer.Write(ctx, func(tx store.Tx) error {
		if err := tx.PutMeta(MetaFilter, enc); err != nil {
			return err
		}
		if err := tx.PutMeta(MetaFrom, fromEnc); err != nil {
			return err
		}
		return crawl.Reset(tx, from.Spec(), spec)
	}); err != nil {
		return fmt.Errorf("cistern: persist filter: %w", err)
	}
	c.cur.Store(nf)
	removed, err := c.deps.Repos.ApplyFilterChange(ctx, change)
	logRemovals(c.deps.Logger, change, removed)
	if err != nil {
		return err
	}
	if c.deps.Kick != nil {
		c.deps.Kick()
	}
	if err := c.deps.Writer.Write(ctx, func(tx store.Tx) error { return tx.DeleteMeta(MetaFrom) }); err != nil {
		return fmt.Errorf("cistern: finish filter change: %w", err)
	}
	return nil
}

// Unfinished returns the spec an unfinished filter change started from, if
// there is one.
func (c *Changer) Unfinished(ctx context.Context) (filter.Spec, bool, error) {
	return c.persisted(ctx, MetaFrom)
}

// persisted reads the spec stored under key, and whether there is one.
func (c *Changer) persisted(ctx context.Context, key string) (filter.Spec, bool, error) {
	var spec filter.Spec
	found := false
	err := c.deps.Store.View(ctx, func(tx store.ReadTx) error {
		v, err := tx.Meta(key)
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

// logRemovals says what a filter change deleted, at WARN: deleting stored
// data is worth seeing with the library's default logger too. Nothing is
// logged for a change that deletes nothing.
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
