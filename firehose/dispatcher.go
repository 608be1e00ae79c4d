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

// Dispatcher runs a Handler on a pool of workers, in parallel across repos
// and in order within one repo, and keeps a Watermark of what has been
// handled.
//
// It is a keyed work queue: each repo (DID) with messages waiting has its
// own FIFO queue, and a repo is ready when it has messages waiting and none
// being handled. Each worker takes the repo that has been ready longest,
// handles its oldest message, and puts the repo back at the end of the
// ready line if more are waiting. So the messages of one repo are handled
// one at a time in dispatch order, different repos are handled in parallel,
// and a repo with a long queue takes its turn with the others (round robin)
// instead of starving them.
//
// Back-pressure is global: Dispatch blocks only when the dispatcher as a
// whole holds its limit of messages accepted and not yet handled, never
// because one repo's queue is long. A backlog in any repo order therefore
// keeps every worker busy as long as enough distinct repos are waiting.
// Memory is bounded by that limit; a repo's queue is dropped as soon as it
// is empty and not being handled.
//
// Messages without a DID (#info) are handled at once, in the goroutine
// calling Dispatch. A handler error is logged and counted; the message
// still counts as handled: the handler is responsible for recording durable
// outcomes (such as marking a repo for resync) before it returns.
//
// Run owns the workers. Messages may be dispatched before Run starts; they
// wait in the queues.
type Dispatcher struct {
	handle  Handler
	workers int
	slots   chan struct{} // one token per accepted, unhandled message with a DID
	wm      Watermark
	log     *slog.Logger

	mu      sync.Mutex
	work    sync.Cond             // signalled when a repo becomes ready, or on stop; uses mu
	repos   map[string]*repoQueue // repos with messages waiting or one being handled
	ready   ring[*repoQueue]      // repos with messages waiting and none being handled
	free    []*repoQueue          // empty repo queues kept for reuse
	waiting int                   // workers blocked in work.Wait
	halt    bool                  // Run's context has ended: start nothing new
	closed  bool                  // Run has returned
	pending int                   // dispatched (queued or running) and not yet handled
	idle    chan struct{}         // closed while pending == 0
	ran     bool
	stopped chan struct{} // closed when Run returns

	handled, failed, duplicates atomic.Int64
}

// repoQueue holds the messages of one repo waiting to be handled.
type repoQueue struct {
	did     string
	msgs    ring[*Message]
	running bool // a worker is handling one of the repo's messages
}

// maxFreeCap is the largest message capacity of a repo queue kept for
// reuse once empty; larger ones are left to the garbage collector.
const maxFreeCap = 16

// NewDispatcher returns a Dispatcher with workers workers (default 16 when
// workers <= 0): at most that many messages, of as many distinct repos, are
// handled at once. queue (default 64 when queue <= 0) sizes the global
// back-pressure limit: the Dispatcher accepts at most workers·(queue+1)
// messages that are not yet handled (waiting or running), in any mix of
// repos, and Dispatch blocks beyond that. handle is called with Run's
// context.
func NewDispatcher(workers, queue int, handle Handler) *Dispatcher {
	if workers <= 0 {
		workers = DefaultWorkers
	}
	if queue <= 0 {
		queue = DefaultQueue
	}
	d := &Dispatcher{
		handle:  handle,
		workers: workers,
		slots:   make(chan struct{}, workers*(queue+1)),
		log:     slog.New(slog.DiscardHandler),
		repos:   make(map[string]*repoQueue),
		idle:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	d.work.L = &d.mu
	close(d.idle)
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

	stop := context.AfterFunc(ctx, func() {
		d.mu.Lock()
		d.halt = true
		d.work.Broadcast()
		d.mu.Unlock()
	})
	defer stop()
	var wg sync.WaitGroup
	for range d.workers {
		wg.Go(func() { d.worker(ctx) })
	}
	wg.Wait()
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	close(d.stopped)
	return ctx.Err()
}

// worker handles the oldest message of the repo ready longest, until ctx
// ends.
func (d *Dispatcher) worker(ctx context.Context) {
	d.mu.Lock()
	for {
		for d.ready.len() == 0 && !d.halt && ctx.Err() == nil {
			d.waiting++
			d.work.Wait()
			d.waiting--
		}
		if d.halt || ctx.Err() != nil { // do not start new work
			d.mu.Unlock()
			return
		}
		q := d.ready.pop()
		m := q.msgs.pop()
		q.running = true
		d.mu.Unlock()

		d.run(ctx, m)
		d.wm.End(m.Seq)
		<-d.slots

		d.mu.Lock()
		q.running = false
		if q.msgs.len() > 0 {
			d.ready.push(q) // behind the repos already waiting
			if d.waiting > 0 {
				d.work.Signal()
			}
		} else {
			d.dropRepo(q)
		}
		d.subPending()
	}
}

// dropRepo forgets an empty repo queue. d.mu is held.
func (d *Dispatcher) dropRepo(q *repoQueue) {
	delete(d.repos, q.did)
	q.did = ""
	if q.msgs.cap() <= maxFreeCap && len(d.free) < cap(d.slots) {
		d.free = append(d.free, q)
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

// Dispatch queues m behind the messages of its repo. It blocks while the
// Dispatcher holds its limit of unhandled messages (see NewDispatcher), and
// returns ctx.Err() if ctx ends first or ErrDispatcherStopped if Run has
// returned; the message is then not handled and the watermark never passes
// it. A message without DID is handled before Dispatch returns.
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

	counted := false // pending already counts m
	select {
	case d.slots <- struct{}{}:
	default:
		// Full: count m as pending while Dispatch blocks, so that Wait
		// waits for it too.
		d.mu.Lock()
		d.addPending()
		d.mu.Unlock()
		counted = true
		select {
		case d.slots <- struct{}{}:
		case <-ctx.Done():
			d.abandon()
			return ctx.Err()
		case <-d.stopped:
			d.abandon()
			return ErrDispatcherStopped
		}
	}

	d.mu.Lock()
	if !counted {
		d.addPending()
	}
	if d.closed {
		d.subPending()
		d.mu.Unlock()
		<-d.slots
		return ErrDispatcherStopped
	}
	q := d.repos[m.DID]
	if q == nil {
		if n := len(d.free); n > 0 {
			q = d.free[n-1]
			d.free = d.free[:n-1]
		} else {
			q = new(repoQueue)
		}
		q.did = m.DID
		d.repos[m.DID] = q
	}
	q.msgs.push(m)
	if !q.running && q.msgs.len() == 1 { // it was neither ready nor running
		d.ready.push(q)
		if d.waiting > 0 {
			d.work.Signal()
		}
	}
	d.mu.Unlock()
	return nil
}

// addPending counts a message as dispatched and not handled. d.mu is held.
func (d *Dispatcher) addPending() {
	if d.pending == 0 {
		d.idle = make(chan struct{})
	}
	d.pending++
}

// subPending counts a message as handled or abandoned. d.mu is held.
func (d *Dispatcher) subPending() {
	d.pending--
	if d.pending == 0 {
		close(d.idle)
	}
}

// abandon undoes the pending count of a message Dispatch did not queue.
func (d *Dispatcher) abandon() {
	d.mu.Lock()
	d.subPending()
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

// ring is a FIFO queue in a circular buffer that grows as needed. The zero
// value is an empty queue.
type ring[T any] struct {
	buf  []T
	head int // index of the oldest element
	n    int // number of elements
}

func (r *ring[T]) len() int { return r.n }
func (r *ring[T]) cap() int { return len(r.buf) }

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		buf := make([]T, max(4, 2*len(r.buf)))
		k := copy(buf, r.buf[r.head:])
		copy(buf[k:], r.buf[:r.head])
		r.buf, r.head = buf, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = v
	r.n++
}

// pop removes and returns the oldest element; the queue must not be empty.
func (r *ring[T]) pop() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return v
}
