// Package writer is cistern's single write path: a group-commit writer over a
// store.Store.
//
// Every producer (backfill batches, live commits, state transitions, cursor
// saves) hands a closure to Write. One goroutine runs many closures in one
// store transaction, so the cost of a commit (an fsync for bbolt) is shared
// by all of them, and event ids are assigned inside the transaction that
// stores them, in commit order. When a closure fails, the transaction is
// rolled back and the rest of its batch is run again without it, so one bad
// write never takes others with it.
//
// When Options.Links is set, every record put also gets its links stored
// in the backlink index, in the same transaction.
//
// The writer also stamps event times strictly increasing to the
// microsecond in id order (see eventClock), so that a time names one
// position of the log.
package writer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// ErrClosed is returned by Write after the writer stopped.
var ErrClosed = errors.New("writer: closed")

// Options configure a Writer. Zero values mean the defaults.
type Options struct {
	// MaxBatch bounds how many closures share one transaction. Default 512.
	MaxBatch int
	// MaxDelay is how long the writer waits for more work to join a batch
	// once it holds some. Default 0: a batch is whatever is queued when the
	// previous commit ends, which already groups work under load without
	// adding latency when idle.
	MaxDelay time.Duration
	// OnCommit, if set, is called after each successful commit with the
	// newest event id (0 if the log is empty). It runs on the writer
	// goroutine and must not block or call Write.
	OnCommit func(newestEvent uint64)
	// Logger receives failures of whole transactions. Default slog.Default().
	Logger *slog.Logger
	// Links, if set, keeps the backlink index: after each PutRecord of a
	// closure, the links Links returns for the record are stored with
	// tx.PutLinks in the same transaction (no links: the record's old ones
	// are removed). Deletes need nothing: DeleteRecord removes a record's
	// links. Default nil: the index is not maintained.
	Links func(r *store.Record) []store.Link
}

func (o Options) withDefaults() Options {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 512
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

type request struct {
	ctx    context.Context
	fn     func(tx store.Tx) error
	done   chan error
	onDone func(error) // set by Submit instead of done
}

// finish reports the outcome of r to its waiter or callback.
func (r *request) finish(err error) {
	if r.onDone != nil {
		r.onDone(err)
		return
	}
	r.done <- err
}

// Writer groups writes into shared transactions. Create it with New, start
// it with Run, and stop it by cancelling Run's context; Close waits.
type Writer struct {
	st   store.Store
	opts Options
	reqs chan *request

	mu      sync.Mutex
	stopped bool
	sending sync.WaitGroup // Submit calls between their check of stopped and their send
	stop    chan struct{}
	exited  chan struct{}

	stats Stats
	clock eventClock // of committed events; used by the Run goroutine only
}

// Stats counts the writer's work.
type Stats struct {
	Commits uint64 // transactions committed
	Writes  uint64 // closures committed
	Failed  uint64 // closures that returned an error
}

// New returns a writer over st. It does nothing until Run.
func New(st store.Store, opts Options) *Writer {
	opts = opts.withDefaults()
	return &Writer{
		st:     st,
		opts:   opts,
		reqs:   make(chan *request, opts.MaxBatch),
		stop:   make(chan struct{}),
		exited: make(chan struct{}),
	}
}

// Write runs fn inside a write transaction shared with other writes and
// returns once that transaction committed (nil) or fn failed (fn's error).
//
// fn may be called more than once: if another closure of the same batch
// fails, the batch is rolled back and run again without it. fn must
// therefore touch nothing but tx, or keep its side effects idempotent. If
// ctx ends before the write is picked up, ctx's error is returned and fn is
// not run; once picked up it runs to completion.
func (w *Writer) Write(ctx context.Context, fn func(tx store.Tx) error) error {
	req := &request{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case w.reqs <- req:
	case <-w.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.done:
		return err
	case <-w.exited:
		// Run may have exited after taking req; its answer is then queued.
		select {
		case err := <-req.done:
			return err
		default:
			return ErrClosed
		}
	}
}

// Submit queues fn like Write but does not wait for it: onDone is called
// with fn's error, nil once the transaction holding fn committed, or
// ErrClosed if the writer stopped first. Submit returns ErrClosed or ctx's
// error, without queueing fn, if it cannot queue it; it blocks while the
// queue is full.
//
// Writes commit in the order they were queued, whether by Write or
// Submit: a write queued after a Submit returned is never committed before
// it. onDone runs on the writer's goroutine, before any later write is
// reported done; it must not block or call Write or Submit.
func (w *Writer) Submit(ctx context.Context, fn func(tx store.Tx) error, onDone func(error)) error {
	req := &request{ctx: ctx, fn: fn, onDone: onDone}
	// A request queued after Run drained the queue would never be
	// answered: Run's drain waits for the sends that passed this check.
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return ErrClosed
	}
	w.sending.Add(1)
	w.mu.Unlock()
	defer w.sending.Done()
	select {
	case w.reqs <- req:
		return nil
	case <-w.stop:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run commits writes until ctx ends, then fails writes still queued with
// ErrClosed and returns. It must be called once.
func (w *Writer) Run(ctx context.Context) error {
	defer close(w.exited)
	defer w.drainClosed()
	batch := make([]*request, 0, w.opts.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			w.markStopped()
			return nil
		case r := <-w.reqs:
			batch = append(batch, r)
		}
		batch = w.fill(ctx, batch)
		w.commit(batch)
	}
}

// fill adds queued requests to batch up to MaxBatch, waiting at most
// MaxDelay for more.
func (w *Writer) fill(ctx context.Context, batch []*request) []*request {
	var timer <-chan time.Time
	if w.opts.MaxDelay > 0 {
		t := time.NewTimer(w.opts.MaxDelay)
		defer t.Stop()
		timer = t.C
	}
	for len(batch) < w.opts.MaxBatch {
		select {
		case r := <-w.reqs:
			batch = append(batch, r)
			continue
		default:
		}
		if timer == nil {
			return batch
		}
		select {
		case r := <-w.reqs:
			batch = append(batch, r)
		case <-timer:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

// errRetry marks a transaction rolled back because one closure failed.
var errRetry = errors.New("writer: retry batch")

func (w *Writer) commit(batch []*request) {
	pending := batch
	for len(pending) > 0 {
		failed := -1
		var failErr error
		var newest uint64
		var clock eventClock
		err := w.st.Update(context.Background(), func(stx store.Tx) error {
			if err := w.clock.load(stx); err != nil {
				return err
			}
			tx := &clockedTx{Tx: stx, clock: w.clock, links: w.opts.Links}
			defer func() { clock = tx.clock }()
			for i, r := range pending {
				if err := r.fn(tx); err != nil {
					failed, failErr = i, err
					return errRetry
				}
			}
			if w.opts.OnCommit != nil {
				_, n, err := tx.EventBounds()
				if err != nil {
					return err
				}
				newest = n
			}
			return nil
		})
		switch {
		case err == nil:
			w.clock = clock
			w.mu.Lock()
			w.stats.Commits++
			w.stats.Writes += uint64(len(pending))
			w.mu.Unlock()
			if w.opts.OnCommit != nil {
				w.opts.OnCommit(newest)
			}
			for _, r := range pending {
				r.finish(nil)
			}
			return
		case errors.Is(err, errRetry) && failed >= 0:
			w.mu.Lock()
			w.stats.Failed++
			w.mu.Unlock()
			pending[failed].finish(failErr)
			pending = append(pending[:failed:failed], pending[failed+1:]...)
		default:
			w.opts.Logger.Error("writer: transaction failed", "writes", len(pending), "err", err)
			for _, r := range pending {
				r.finish(fmt.Errorf("writer: commit: %w", err))
			}
			return
		}
	}
}

func (w *Writer) markStopped() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.stopped = true
		close(w.stop)
	}
}

// drainClosed fails every request still queued once Run ends.
func (w *Writer) drainClosed() {
	w.markStopped()
	w.sending.Wait()
	for {
		select {
		case r := <-w.reqs:
			r.finish(ErrClosed)
		default:
			return
		}
	}
}

// Stats returns counters of the writer's work so far.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}
