package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// Run enforces retention every Options.PruneInterval (and once at start)
// until ctx ends or the Log is closed, and returns nil then. With neither
// MaxAge nor MaxEvents set it only waits. Pruning errors are logged and
// retried at the next interval.
func (l *Log) Run(ctx context.Context) error {
	if l.opts.MaxAge <= 0 && l.opts.MaxEvents <= 0 {
		select {
		case <-ctx.Done():
		case <-l.closedCh:
		}
		return nil
	}
	t := time.NewTicker(l.opts.PruneInterval)
	defer t.Stop()
	for {
		if _, err := l.Prune(ctx); err != nil && ctx.Err() == nil {
			l.opts.Logger.Error("stream: prune", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-l.closedCh:
			return nil
		case <-t.C:
		}
	}
}

// Prune deletes the events retention no longer keeps, Options.PruneBatch
// at a time, each batch in its own write transaction, and returns how many
// it deleted. Record values referenced only by pruned events are reclaimed
// by the store. Subscriptions positioned before the new oldest event end
// with ErrOutdatedCursor (or skip ahead with a Notice, with FromOldest)
// when they next read.
func (l *Log) Prune(ctx context.Context) (int, error) {
	through, err := l.pruneThrough(ctx)
	if err != nil || through == 0 {
		return 0, err
	}
	total := 0
	for {
		var n int
		err := l.opts.Writer.Write(ctx, func(tx store.Tx) error {
			var err error
			n, err = tx.PruneEvents(through, l.opts.PruneBatch)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("stream: prune through %d: %w", through, err)
		}
		total += n
		if n < l.opts.PruneBatch {
			break
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
	if total > 0 {
		l.opts.Logger.Info("stream: pruned events", "count", total, "through", through)
	}
	return total, nil
}

// pruneThrough returns the id of the newest event retention drops, or 0.
func (l *Log) pruneThrough(ctx context.Context) (uint64, error) {
	var through uint64
	err := l.st.View(ctx, func(tx store.ReadTx) error {
		oldest, newest, err := tx.EventBounds()
		if err != nil || oldest == 0 {
			return err
		}
		if keep := l.opts.MaxEvents; keep > 0 && newest-oldest+1 > uint64(keep) {
			through = newest - uint64(keep)
		}
		if l.opts.MaxAge > 0 {
			cutoff := l.opts.Now().Add(-l.opts.MaxAge)
			t, err := lastBefore(tx, oldest, newest, cutoff)
			if err != nil {
				return err
			}
			through = max(through, t)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("stream: retention bounds: %w", err)
	}
	return through, nil
}

// lastBefore finds, by binary search over ids in [oldest, newest], the last
// event whose Time is before cutoff, or 0. Event times are non-decreasing in
// id order (the writer stamps them in commit order); should a clock step back
// make them not quite so, pruning by age is approximate, never unsafe.
func lastBefore(tx store.ReadTx, oldest, newest uint64, cutoff time.Time) (uint64, error) {
	lo, hi := oldest, newest+1 // find the first id whose time is not before cutoff
	for lo < hi {
		mid := lo + (hi-lo)/2
		ev, err := tx.Event(mid)
		if errors.Is(err, store.ErrNotFound) {
			// Pruned concurrently; treat as old.
			lo = mid + 1
			continue
		}
		if err != nil {
			return 0, err
		}
		if ev.Time.Before(cutoff) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == oldest {
		return 0, nil
	}
	return lo - 1, nil
}
