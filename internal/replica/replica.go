// Package replica is what makes an Indexer a read-only replica of a store
// that another process indexes into (Config.ReadOnly, on a store several
// processes open, such as store/pgstore).
//
// A replica fetches and writes nothing: Store refuses every Update, Writer
// every Write, both with the error the root package hands in (its
// ErrReadOnly). In place of the firehose and backfill, Follower.Run polls the
// store for the newest event id and the persisted filter, and tells the
// Indexer what the indexing process committed, so that the stream's
// subscriptions and WaitSynced's waiters wake up and the filter in force
// follows the indexing process's.
package replica

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/cistern-dev/cistern/internal/filterchange"
	"github.com/cistern-dev/cistern/store"
)

// Interval is how often a Follower looks for what the indexing process
// committed.
const Interval = 200 * time.Millisecond

// Store returns st with every Update refused with err, whichever component
// asks.
func Store(st store.Store, err error) store.Store { return readOnlyStore{Store: st, err: err} }

type readOnlyStore struct {
	store.Store
	err error
}

func (s readOnlyStore) Update(context.Context, func(tx store.Tx) error) error { return s.err }

// Writer refuses every write with its error, without a failed transaction
// logged: the write path of a read-only Indexer's stream (acks, pruning).
type Writer struct{ Err error }

// Write returns w.Err.
func (w Writer) Write(context.Context, func(tx store.Tx) error) error { return w.Err }

// Deps are what a Follower reads and tells.
type Deps struct {
	// Store is polled.
	Store store.Store
	// Notify is called with the newest event id when it changed.
	Notify func(newest uint64)
	// Changed is called after every poll that read the store: repo states
	// change without events too.
	Changed func()
	// Filters takes up the persisted filter when it changed.
	Filters *filterchange.Changer
	// Logger receives the failed polls.
	Logger *slog.Logger
}

// Follower follows the store for a read-only Indexer.
type Follower struct{ deps Deps }

// New returns a Follower over deps.
func New(deps Deps) *Follower { return &Follower{deps: deps} }

// Run polls the store every Interval until ctx ends, and returns nil then.
// A failed read is logged and tried again (the store may be failing over).
func (f *Follower) Run(ctx context.Context) error {
	var (
		seen uint64
		spec []byte
	)
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for {
		var newest uint64
		var s []byte
		err := f.deps.Store.View(ctx, func(tx store.ReadTx) error {
			var err error
			if _, newest, err = tx.EventBounds(); err != nil {
				return err
			}
			s, err = tx.Meta(filterchange.MetaFilter)
			if errors.Is(err, store.ErrNotFound) {
				err = nil
			}
			return err
		})
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			f.deps.Logger.Warn("cistern: read-only: reading the store failed", "err", err)
		default:
			if !bytes.Equal(s, spec) {
				if err := f.deps.Filters.Adopt(s); err != nil {
					f.deps.Logger.Warn("cistern: read-only: persisted filter", "err", err)
				}
				spec = s
			}
			if newest != seen {
				seen = newest
				f.deps.Notify(newest)
			}
			f.deps.Changed()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
