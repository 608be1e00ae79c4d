package cistern

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// ErrReadOnly is returned by every method that would write (Track,
// Untrack, Resync, SetFilter, durable consumer acks...) when the Indexer
// was opened with Config.ReadOnly.
var ErrReadOnly = errors.New("cistern: this process is read-only (a replica): writes go to the indexing process")

// followInterval is how often a read-only Indexer looks for what the
// indexing process committed.
const followInterval = 200 * time.Millisecond

// readOnlyStore refuses every Update of a read-only Indexer, whichever
// component asks.
type readOnlyStore struct{ store.Store }

func (readOnlyStore) Update(context.Context, func(tx store.Tx) error) error { return ErrReadOnly }

// followStore is Run of a read-only Indexer: it polls the store for the
// newest event id and the persisted filter, and wakes the stream's
// subscriptions and WaitSynced's waiters when the indexing process has
// committed, until ctx ends.
func (ix *Indexer) followStore(ctx context.Context) error {
	var newest uint64
	var spec []byte
	tick := time.NewTicker(followInterval)
	defer tick.Stop()
	for {
		var n uint64
		var s []byte
		err := ix.st.View(ctx, func(tx store.ReadTx) error {
			var err error
			if _, n, err = tx.EventBounds(); err != nil {
				return err
			}
			s, err = tx.Meta(metaFilter)
			if errors.Is(err, store.ErrNotFound) {
				err = nil
			}
			return err
		})
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			// The store may be failing over; keep trying.
			ix.log.Warn("cistern: read-only: reading the store failed", "err", err)
		default:
			if !bytes.Equal(s, spec) {
				if err := ix.adoptFilter(s); err != nil {
					ix.log.Warn("cistern: read-only: persisted filter", "err", err)
				}
				spec = s
			}
			if n != newest {
				newest = n
				ix.events.Notify(n)
			}
			// Repo states change without events too: WaitSynced re-reads.
			ix.changedMu.Lock()
			close(ix.changed)
			ix.changed = make(chan struct{})
			ix.changedMu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// adoptFilter makes the persisted filter (encoded; nil for none) the
// Indexer's, as the indexing process changed it.
func (ix *Indexer) adoptFilter(encoded []byte) error {
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
	ix.filt.Store(f)
	return nil
}

// ReadOnly reports whether the Indexer was opened with Config.ReadOnly.
func (ix *Indexer) ReadOnly() bool { return ix.cfg.ReadOnly }

// streamWriter is the stream's write path: the group-commit writer, or,
// read-only, one that refuses every write without a failed transaction
// logged.
func (ix *Indexer) streamWriter() stream.Writer {
	if ix.cfg.ReadOnly {
		return refusingWriter{}
	}
	return ix.w
}

type refusingWriter struct{}

func (refusingWriter) Write(context.Context, func(tx store.Tx) error) error { return ErrReadOnly }
