package stream

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cistern-dev/cistern/store"
)

var (
	// ErrOutdatedCursor is returned by Subscribe when the cursor is older
	// than the retained log (events after it have been pruned), and is the
	// Err of a subscription that fell so far behind that retention pruned
	// events it had not read yet (unless SubscribeOptions.FromOldest is set).
	ErrOutdatedCursor = errors.New("stream: cursor is older than the retained log")
	// ErrFutureCursor is returned by Subscribe when the cursor is beyond the
	// newest event of the log.
	ErrFutureCursor = errors.New("stream: cursor is beyond the newest event")
	// ErrInvalidOptions is wrapped by every error Subscribe returns for
	// options that cannot be satisfied: a bad collection pattern, DID,
	// kind, origin or consumer name.
	ErrInvalidOptions = errors.New("stream: invalid subscribe options")
	// ErrClosed is returned by Subscribe after Log.Close, and is the Err of
	// the subscriptions Close ended.
	ErrClosed = errors.New("stream: log closed")
	// ErrConsumerBusy is returned when a durable consumer name is already
	// used by an active subscription of the same Log.
	ErrConsumerBusy = errors.New("stream: consumer already subscribed")
	// ErrNotDurable is returned by Subscription.Ack on a subscription
	// without a Name.
	ErrNotDurable = errors.New("stream: subscription has no consumer name")
)

// Options configure a Log. Zero values mean the defaults.
type Options struct {
	// PageSize is how many events a subscription reads from the store in
	// one read transaction. Default 256.
	PageSize int
	// Buffer is the capacity of each subscription's event channel.
	// Default 64.
	Buffer int
	// MaxAge prunes events whose Time is older than this. Zero keeps events
	// whatever their age (the default). Event times are expected to be
	// non-decreasing in id order, as the writer stamps them.
	MaxAge time.Duration
	// MaxEvents prunes all but the newest MaxEvents events. Zero keeps any
	// number (the default).
	MaxEvents int64
	// PruneInterval is how often Run enforces retention. Default 1 minute.
	PruneInterval time.Duration
	// PruneBatch is the most events deleted in one write transaction, so
	// that pruning never holds the writer for long. Default 10,000.
	PruneBatch int
	// Logger receives pruning reports and subscription failures. Default:
	// a logger that discards everything.
	Logger *slog.Logger
	// Now returns the current time, for retention by age. Default time.Now.
	Now func() time.Time
	// Writer carries the Log's writes (consumer acks and deletions,
	// retention's prunes), so that they share the store's one write path
	// with every other change: the indexer passes its group-commit writer
	// (internal/writer). Default: each write is its own Store.Update, for
	// a Log used on a store nobody else writes through a writer.
	Writer Writer
}

// Writer runs fn in a write transaction, possibly shared with other
// writes; fn may run more than once and touches nothing but tx.
// *writer.Writer (internal/writer) satisfies it.
type Writer interface {
	Write(ctx context.Context, fn func(tx store.Tx) error) error
}

// storeWriter is the default Writer: one Store.Update per write.
type storeWriter struct{ st store.Store }

func (w storeWriter) Write(ctx context.Context, fn func(tx store.Tx) error) error {
	return w.st.Update(ctx, fn)
}

func (o Options) withDefaults() Options {
	if o.PageSize <= 0 {
		o.PageSize = 256
	}
	if o.Buffer <= 0 {
		o.Buffer = 64
	}
	if o.PruneInterval <= 0 {
		o.PruneInterval = time.Minute
	}
	if o.PruneBatch <= 0 {
		o.PruneBatch = 10_000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Log is the reader side of the event log kept in a store: it serves
// subscriptions, keeps durable consumer positions and enforces retention.
//
// A Log is safe for concurrent use. The writer of the store calls Notify
// after each commit that appended events; Run enforces retention until its
// context ends; Close ends every subscription and waits for them.
type Log struct {
	st   store.Store
	opts Options

	mu       sync.Mutex
	wake     chan struct{} // closed and replaced by Notify when waited on
	waited   bool          // someone took wake since it was made
	closed   bool
	names    map[string]bool // durable consumers with an active subscription
	subs     sync.WaitGroup
	active   atomic.Int64 // subscriptions running
	closedCh chan struct{}
}

// Subscriptions returns how many subscriptions are running (library and
// WebSocket alike): from Subscribe until the subscription ends.
func (l *Log) Subscriptions() int { return int(l.active.Load()) }

// New returns a Log over the events of st. It starts no goroutine: call Run
// for retention.
func New(st store.Store, opts Options) *Log {
	opts = opts.withDefaults()
	if opts.Writer == nil {
		opts.Writer = storeWriter{st}
	}
	return &Log{
		st:       st,
		opts:     opts,
		wake:     make(chan struct{}),
		names:    make(map[string]bool),
		closedCh: make(chan struct{}),
	}
}

// Notify tells waiting subscriptions that events up to newest have been
// committed. It never blocks and may be called from any goroutine; its cost
// does not depend on the number of subscriptions (they are woken by closing
// one channel). Calling it spuriously is harmless.
func (l *Log) Notify(newest uint64) {
	_ = newest // subscriptions read the store, the source of truth
	l.mu.Lock()
	if l.waited {
		close(l.wake)
		l.wake = make(chan struct{})
		l.waited = false
	}
	l.mu.Unlock()
}

// wakeCh returns a channel closed by the next Notify. Taking it before
// reading the store means no Notify after the read can be missed.
func (l *Log) wakeCh() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waited = true
	return l.wake
}

// Close ends every subscription (their Err is ErrClosed) and waits for their
// goroutines. Later Subscribe calls fail with ErrClosed. It does not close
// the store.
func (l *Log) Close() {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		close(l.closedCh)
	}
	l.mu.Unlock()
	l.subs.Wait()
}
