package repos

import (
	"context"
	"errors"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// ErrGone is returned by DeleteRecords with MustExist when the repo was
// untracked meanwhile.
var ErrGone = errors.New("repos: repo no longer tracked")

// DeleteOptions tune DeleteRecords. The zero value deletes every record
// with non-live events, in batches of 1000.
type DeleteOptions struct {
	// Which, if set, selects the collections whose records are deleted.
	Which func(collection string) bool
	// Live marks the delete events live (an account deleted on the
	// firehose) rather than backfill's.
	Live bool
	// BatchSize is how many records one transaction deletes. Default 1000.
	BatchSize int
	// MustExist stops with ErrGone, in the next batch, once the repo's
	// state is gone (untracked meanwhile).
	MustExist bool
	// Final, if set, runs in the transaction of the last batch (alone if
	// there are no records).
	Final func(tx store.Tx) error
}

// DeleteRecords removes a repo's records, each with a delete event, in
// batches: the one batched delete of the indexer (account deletions,
// untracking, a narrowed filter) and of backfill (a repo gone from its
// PDS, or no longer selected). The deletes belong to the repo's current rev
// (or, for a repo without one, the record's). A record already gone is
// skipped. It returns how many records it deleted.
func DeleteRecords(ctx context.Context, st store.Store, w Writer, did string, opts DeleteOptions) (int64, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 1000
	}
	var deleted int64
	after := ""
	for last := false; !last; {
		var page []*store.Record
		err := st.View(ctx, func(tx store.ReadTx) error {
			return tx.ScanRecords(store.RecordScan{DID: did, After: after}, func(r *store.Record) (bool, error) {
				page = append(page, r)
				return len(page) < opts.BatchSize, nil
			})
		})
		if err != nil {
			return deleted, err
		}
		last = len(page) < opts.BatchSize
		if len(page) == 0 && opts.Final == nil {
			return deleted, nil
		}
		if len(page) > 0 {
			after = page[len(page)-1].Collection + "/" + page[len(page)-1].RKey
		}
		now := time.Now()
		n := int64(0)
		err = w.Write(ctx, func(tx store.Tx) error {
			n = 0
			rev := ""
			repo, err := tx.Repo(did)
			switch {
			case err == nil:
				rev = repo.Rev
			case errors.Is(err, store.ErrNotFound) && opts.MustExist:
				return ErrGone
			case !errors.Is(err, store.ErrNotFound):
				return err
			}
			for _, r := range page {
				if opts.Which != nil && !opts.Which(r.Collection) {
					continue
				}
				if _, err := tx.Record(did, r.Collection, r.RKey); errors.Is(err, store.ErrNotFound) {
					continue
				} else if err != nil {
					return err
				}
				evRev := rev
				if evRev == "" {
					evRev = r.Rev
				}
				if err := store.WriteRecordChange(tx, &store.Event{Kind: store.KindRecord, Live: opts.Live, DID: did, Rev: evRev,
					Time: now, Collection: r.Collection, RKey: r.RKey, Action: store.ActionDelete}); err != nil {
					return err
				}
				n++
			}
			if last && opts.Final != nil {
				return opts.Final(tx)
			}
			return nil
		})
		if err != nil {
			return deleted, err
		}
		deleted += n
	}
	return deleted, nil
}
