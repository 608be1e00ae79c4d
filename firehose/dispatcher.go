package firehose

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Defaults of NewDispatcher.
const (
	DefaultWorkers = 16
	DefaultQueue   = 64
)

var (
	// ErrDispatcherStopped is returned by Dispatch and Wait once the
	// Dispatcher's Run has returned, and by a second call of Run.
	ErrDispatcherStopped = errors.New("firehose: dispatcher stopped")
)

// Dispatcher runs a Handler on a fixed set of workers, in parallel across
// repos and in order within one repo, and keeps a Watermark of what has been
// handled.
//
// Messages with a DID go to the worker chosen by a hash of the DID, so the
// messages of one repo are handled one at a time in dispatch order. Messages
// without a DID (#info) are handled at once, in the goroutine calling
// Dispatch. A handler error is logged and counted; the message still counts
// as handled: the handler is responsible for recording durable outcomes
// (such as marking a repo for resync) before it returns.
//
// Run owns the workers. Messages may be dispatched before Run starts; they
// wait in the queues.
type Dispatcher struct {
	handle Handler
	queues []chan *Message
	wm     Watermark
	log    *slog.Logger

	mu      sync.Mutex
	pending int           // dispatched (queued or running) and not yet handled
	idle    chan struct{} // closed while pending == 0
	ran     bool

	stopped chan struct{} // closed when Run returns

	handled, failed, duplicates atomic.Int64
}

// NewDispatcher returns a Dispatcher with workers workers (default 16 when
// workers <= 0), each with a queue of queue messages (default 64 when
// queue <= 0). At most workers·(queue+1) messages are in flight at once;
// Dispatch blocks beyond that. handle is called with Run's context.
func NewDispatcher(workers, queue int, handle Handler) *Dispatcher {
	if workers <= 0 {
		workers = DefaultWorkers
	}
	if queue <= 0 {
		queue = DefaultQueue
	}
	d := &Dispatcher{
		handle:  handle,
		queues:  make([]chan *Message, workers),
		log:     slog.New(slog.DiscardHandler),
		idle:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	close(d.idle)
	for i := range d.queues {
		d.queues[i] = make(chan *Message, queue)
	}
	return d
}

// SetLogger sets where handler errors are logged (default: discarded). Call
// it before Run and Dispatch.
func (d *Dispatcher) SetLogger(l *slog.Logger) {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	d.log = l
}

// Run starts the workers and blocks until ctx ends. A worker finishes the
// message it is handling (whose handler sees ctx ended) and stops; messages
// still queued are not handled, so the watermark stays below them. Run
// returns ctx.Err() once every worker has stopped. A Dispatcher runs once:
// a second Run returns ErrDispatcherStopped.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	if d.ran {
		d.mu.Unlock()
		return ErrDispatcherStopped
	}
	d.ran = true
	d.mu.Unlock()

	var wg sync.WaitGroup
	for _, q := range d.queues {
		wg.Go(func() { d.work(ctx, q) })
	}
	wg.Wait()
	close(d.stopped)
	return ctx.Err()
}

func (d *Dispatcher) work(ctx context.Context, q <-chan *Message) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-q:
			if ctx.Err() != nil { // select picks at random; do not start new work
				return
			}
			d.run(ctx, m)
			d.wm.End(m.Seq)
			d.done()
		}
	}
}

// run calls the handler and logs its error.
func (d *Dispatcher) run(ctx context.Context, m *Message) {
	if err := d.handle(ctx, m); err != nil {
		d.failed.Add(1)
		d.log.Error("firehose: handler failed", "err", err, "seq", m.Seq, "kind", m.Kind, "did", m.DID)
	}
	d.handled.Add(1)
}

// Dispatch hands m to its worker. It blocks while that worker's queue is
// full, and returns ctx.Err() if ctx ends first or ErrDispatcherStopped if
// Run has returned; the message is then not handled and the watermark never
// passes it. A message without DID is handled before Dispatch returns.
//
// A message whose sequence number is not above every one dispatched before
// is a duplicate: it is dropped, counted, and Dispatch returns nil. So a
// Client may be restarted on the same Dispatcher from its Watermark: what
// is redelivered up to the last message dispatched is dropped.
//
// Call Dispatch from one goroutine (Client.Run does): per-repo order is the
// order of the calls. Its signature is a Handler's, so a Dispatcher can be
// passed to Client.Run.
func (d *Dispatcher) Dispatch(ctx context.Context, m *Message) error {
	select {
	case <-d.stopped:
		return ErrDispatcherStopped
	default:
	}
	if m.Seq > 0 {
		if err := d.wm.Begin(m.Seq); err != nil {
			d.duplicates.Add(1)
			return nil
		}
	}
	if m.DID == "" {
		d.run(ctx, m)
		d.wm.End(m.Seq)
		return nil
	}
	d.begin()
	select {
	case d.queues[d.worker(m.DID)] <- m:
		return nil
	case <-ctx.Done():
		d.done()
		return ctx.Err()
	case <-d.stopped:
		d.done()
		return ErrDispatcherStopped
	}
}

// worker picks the queue of a DID with FNV-1a.
func (d *Dispatcher) worker(did string) int {
	h := uint64(14695981039346656037)
	for i := 0; i < len(did); i++ {
		h ^= uint64(did[i])
		h *= 1099511628211
	}
	return int(h % uint64(len(d.queues)))
}

func (d *Dispatcher) begin() {
	d.mu.Lock()
	if d.pending == 0 {
		d.idle = make(chan struct{})
	}
	d.pending++
	d.mu.Unlock()
}

func (d *Dispatcher) done() {
	d.mu.Lock()
	d.pending--
	if d.pending == 0 {
		close(d.idle)
	}
	d.mu.Unlock()
}

// Watermark returns the highest sequence number at or below which every
// dispatched message has been handled: the cursor that is safe to persist.
// It is 0 until a message with a sequence number has been dispatched, and
// never decreases. O(1).
func (d *Dispatcher) Watermark() int64 { return d.wm.Value() }

// DispatcherStats are a Dispatcher's counters.
type DispatcherStats struct {
	// Handled counts handler calls that returned; Failed those that
	// returned an error.
	Handled, Failed int64
	// Duplicates counts messages dropped by Dispatch because their sequence
	// number was not above the last one dispatched.
	Duplicates int64
	// InFlight is how many dispatched messages with a sequence number are
	// not handled yet (including any whose Dispatch failed).
	InFlight int
}

// Stats returns a snapshot of the Dispatcher's counters.
func (d *Dispatcher) Stats() DispatcherStats {
	return DispatcherStats{
		Handled:    d.handled.Load(),
		Failed:     d.failed.Load(),
		Duplicates: d.duplicates.Load(),
		InFlight:   d.wm.InFlight(),
	}
}

// Wait blocks until every message dispatched so far has been handled. It
// returns ctx.Err() if ctx ends first and ErrDispatcherStopped if Run
// returns with work left.
func (d *Dispatcher) Wait(ctx context.Context) error {
	d.mu.Lock()
	idle := d.idle
	d.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-d.stopped:
		select {
		case <-idle:
			return nil
		default:
			return ErrDispatcherStopped
		}
	}
}
