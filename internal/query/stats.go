package query

import (
	"context"
	"time"

	"github.com/cistern-dev/cistern/internal/repos"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/verify"
)

// StoreStats is what Stats reads from the store, in one read transaction.
type StoreStats struct {
	store.Counts
	// OldestEvent and NewestEvent bound the retained event log.
	OldestEvent, NewestEvent uint64
	// Rejected counts live commits rejected, by reason.
	Rejected map[verify.RejectReason]int64
	// HeldCommits and HeldBytes count the live commits held (zero for a
	// store that is no store.HeldCounter).
	HeldCommits, HeldBytes int64
	// Queued is the length of the backfill queue.
	Queued int64
}

// StoreStats reads the store's counters; also, if not nil, reads more in
// the same transaction.
func (q *Reader) StoreStats(ctx context.Context, also func(tx store.ReadTx) error) (*StoreStats, error) {
	s := &StoreStats{}
	err := q.View(ctx, func(tx store.ReadTx) error {
		var err error
		if s.Counts, err = tx.Counts(); err != nil {
			return err
		}
		if s.OldestEvent, s.NewestEvent, err = tx.EventBounds(); err != nil {
			return err
		}
		if also != nil {
			if err := also(tx); err != nil {
				return err
			}
		}
		if s.Rejected, err = repos.RejectCounts(tx); err != nil {
			return err
		}
		if hc, ok := tx.(store.HeldCounter); ok {
			if s.HeldCommits, s.HeldBytes, err = hc.HeldCommits(); err != nil {
				return err
			}
		}
		return tx.ScanQueue(func(string, time.Time) (bool, error) {
			s.Queued++
			return true, nil
		})
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}
