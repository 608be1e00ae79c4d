package tapcompat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// Subscriber opens subscriptions to the event log; *cistern.Indexer and
// *stream.Log implement it.
type Subscriber interface {
	Subscribe(ctx context.Context, opts stream.SubscribeOptions) (*stream.Subscription, error)
}

// ErrOutboxClosed is returned by Outbox.Next once the outbox has stopped.
var ErrOutboxClosed = errors.New("tapcompat: outbox stopped")

// OutboxOptions configure an Outbox. Zero values mean the defaults.
type OutboxOptions struct {
	// Name is the durable consumer the outbox reads as (see
	// stream.SubscribeOptions.Name); its acknowledged position is stored
	// with the index. Required.
	Name string
	// Window bounds the events read from the log and not yet acknowledged
	// (tap's outbox capacity): when it is full, reading pauses until acks
	// free room. Default 10,000.
	Window int
	// RetryTimeout is how long a delivered event may stay unacknowledged
	// before it is delivered again (tap's TAP_RETRY_TIMEOUT). Zero keeps
	// the default of 60s; a negative value never times out (the webhook,
	// which retries on its own, uses that).
	RetryTimeout time.Duration
	// SaveInterval is how often the acknowledged position is written to
	// the store when it moved. Default 200ms.
	SaveInterval time.Duration
	// Translate renders an event in the form delivered, or returns nil to
	// skip it (a skipped event counts as acknowledged). Required.
	Translate func(ctx context.Context, ev *store.Event) ([]byte, error)
	// Logger receives delivery failures. Default: discard.
	Logger *slog.Logger
}

func (o OutboxOptions) withDefaults() OutboxOptions {
	if o.Window <= 0 {
		o.Window = 10_000
	}
	if o.RetryTimeout == 0 {
		o.RetryTimeout = 60 * time.Second
	}
	if o.SaveInterval <= 0 {
		o.SaveInterval = 200 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Delivery is one event handed to a sender.
type Delivery struct {
	// ID is the event id, the id the consumer acknowledges.
	ID uint64
	// DID is the repo the event belongs to.
	DID string
	// Live marks a barrier: it is sent alone, after every earlier event of
	// its repo is acknowledged, and nothing later of its repo is sent
	// before it is acknowledged.
	Live bool
	// Body is the rendered event.
	Body []byte

	state    deliveryState
	owner    any // the sender holding it while in flight
	sentAt   time.Time
	attempts int
}

type deliveryState uint8

const (
	waiting  deliveryState = iota // held back by its repo's order
	ready                         // may be sent; in the ready queue
	inFlight                      // handed to a sender, not acknowledged
	acked
)

// repoQueue orders one repo's deliveries: tap's rule is that backfill
// events may be in flight together, and a live event is in flight alone.
type repoQueue struct {
	waiting      []*Delivery // in id order, not yet released
	outstanding  int         // released (ready or in flight) and not acked
	liveOutstand bool        // the one outstanding delivery is live
}

// OutboxStats are an outbox's counters.
type OutboxStats struct {
	// Name is the durable consumer's name.
	Name string `json:"name"`
	// Acked is the position stored for the consumer: every event up to it
	// is acknowledged.
	Acked uint64 `json:"acked"`
	// Lag is how many events of the log are not acknowledged yet (filled
	// by Service.Stats).
	Lag uint64 `json:"lag"`
	// Clients is the number of /channel connections (filled by
	// Service.Stats).
	Clients int64 `json:"clients"`
	// Read is the id of the last event read from the log.
	Read uint64 `json:"read"`
	// Pending counts events read and not acknowledged (ready, held back by
	// their repo's order, or in flight).
	Pending int `json:"pending"`
	// InFlight counts events handed to a client and not acknowledged.
	InFlight int `json:"inFlight"`
	// Delivered counts sends, redeliveries included; Redelivered counts
	// sends of an event sent before (timeouts, disconnects, failed
	// webhook posts); AckedTotal counts acknowledgements of in-flight
	// events; Skipped counts events with no tap form.
	Delivered   int64 `json:"delivered"`
	Redelivered int64 `json:"redelivered"`
	AckedTotal  int64 `json:"ackedTotal"`
	Skipped     int64 `json:"skipped"`
}

// Outbox delivers the event log to one target (the /channel clients, or a
// webhook) with tap's guarantees, on a durable consumer of the log.
//
// Events are read in id order from a subscription named Options.Name and
// kept until acknowledged, at most Options.Window at a time. Next hands out
// deliveries that their repo's order allows (see Delivery.Live); Ack
// acknowledges one by id, in any order; Requeue gives back a delivery not
// acknowledged (its sender went away) to be sent again first. The stored
// position is the highest id below which everything is acknowledged, saved
// every Options.SaveInterval: after a restart (a crash included) delivery
// resumes after it, so each event is delivered at least once and an event
// acknowledged out of order may come again.
//
// An Outbox is safe for concurrent use. Run reads the log until its context
// ends; Next, Ack and Requeue may be called from any goroutine.
type Outbox struct {
	src  Subscriber
	opts OutboxOptions

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced when readiness or room changes
	order    []*Delivery   // read, in id order, head not acked
	byID     map[uint64]*Delivery
	repos    map[string]*repoQueue
	ready    []*Delivery // FIFO of deliveries that may be sent
	inFlight int
	read     uint64 // last id read from the subscription
	stored   uint64 // position last saved
	stopped  bool

	delivered, redelivered, ackedTotal, skipped atomic.Int64
}

// NewOutbox returns an outbox over src. It reads nothing until Run.
func NewOutbox(src Subscriber, opts OutboxOptions) (*Outbox, error) {
	if opts.Name == "" {
		return nil, errors.New("tapcompat: outbox needs a consumer name")
	}
	if opts.Translate == nil {
		return nil, errors.New("tapcompat: outbox needs a Translate function")
	}
	return &Outbox{
		src:     src,
		opts:    opts.withDefaults(),
		changed: make(chan struct{}),
		byID:    make(map[uint64]*Delivery),
		repos:   make(map[string]*repoQueue),
	}, nil
}

// Name returns the durable consumer's name.
func (o *Outbox) Name() string { return o.opts.Name }

// signal wakes everyone waiting on a change. o.mu must be held.
func (o *Outbox) signal() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// Run reads the log and keeps the stored position up to date until ctx ends
// or the subscription fails; it saves the position one last time before
// returning. Deliveries not acknowledged by then are delivered again by the
// next Run.
func (o *Outbox) Run(ctx context.Context) error {
	// FromOldest: when retention has pruned events the target never got,
	// delivery goes on from the oldest retained one (logged) rather than
	// stopping for good.
	sub, err := o.src.Subscribe(ctx, stream.SubscribeOptions{Name: o.opts.Name, Cursor: 0, FromOldest: true})
	if err != nil {
		return fmt.Errorf("tapcompat: outbox %s: %w", o.opts.Name, err)
	}
	defer sub.Close()
	o.mu.Lock()
	o.read, o.stored, o.stopped = sub.Start(), sub.Start(), false
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		o.stopped = true
		o.order, o.ready = nil, nil
		clear(o.byID)
		clear(o.repos)
		o.inFlight = 0
		o.signal()
		o.mu.Unlock()
	}()

	saveErr := make(chan error, 1)
	saveCtx, stopSave := context.WithCancel(context.WithoutCancel(ctx))
	var saver sync.WaitGroup
	saver.Add(1)
	go func() {
		defer saver.Done()
		saveErr <- o.saveLoop(saveCtx, ctx.Done(), sub)
	}()
	err = o.readLoop(ctx, sub)
	stopSave()
	saver.Wait()
	if serr := <-saveErr; err == nil {
		err = serr
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// readLoop admits events from sub while the window has room.
func (o *Outbox) readLoop(ctx context.Context, sub *stream.Subscription) error {
	for {
		o.mu.Lock()
		for o.full() {
			ch := o.changed
			o.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
			o.mu.Lock()
		}
		o.mu.Unlock()
		var ev *store.Event
		select {
		case <-ctx.Done():
			return ctx.Err()
		case n := <-sub.Notices():
			o.opts.Logger.Warn("tapcompat: events were pruned before they were delivered", "outbox", o.opts.Name, "notice", n.Message)
			continue
		case e, ok := <-sub.Events():
			if !ok {
				if err := sub.Err(); err != nil {
					return err
				}
				return ctx.Err()
			}
			ev = e
		}
		body, err := o.opts.Translate(ctx, ev)
		if err != nil {
			return fmt.Errorf("tapcompat: outbox %s: event %d: %w", o.opts.Name, ev.ID, err)
		}
		o.admit(ev, body)
	}
}

// full reports whether reading must pause: Window events are not
// acknowledged, or the order (acknowledged events behind an unacknowledged
// one, kept to compute the position) has grown to 8 × Window. o.mu must be
// held.
func (o *Outbox) full() bool {
	return len(o.byID) >= o.opts.Window || len(o.order) >= 8*o.opts.Window
}

// admit adds one event read from the log.
func (o *Outbox) admit(ev *store.Event, body []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.read = ev.ID
	if body == nil {
		o.skipped.Add(1)
		o.signal() // the position may move
		return
	}
	d := &Delivery{ID: ev.ID, DID: ev.DID, Live: ev.Live, Body: body}
	o.order = append(o.order, d)
	o.byID[d.ID] = d
	q := o.repos[d.DID]
	if q == nil {
		q = &repoQueue{}
		o.repos[d.DID] = q
	}
	q.waiting = append(q.waiting, d)
	o.release(q)
	o.signal()
}

// release moves the repo's waiting deliveries to the ready queue as far
// as tap's order allows. o.mu must be held.
func (o *Outbox) release(q *repoQueue) {
	for len(q.waiting) > 0 && !q.liveOutstand {
		d := q.waiting[0]
		if d.Live && q.outstanding > 0 {
			return
		}
		q.waiting = q.waiting[1:]
		q.outstanding++
		q.liveOutstand = d.Live
		d.state = ready
		o.ready = append(o.ready, d)
		if d.Live {
			return
		}
	}
}

// Next waits for a delivery that may be sent and hands it to owner, which
// must Ack or Requeue it. It returns ErrOutboxClosed once Run has returned,
// or ctx's error.
func (o *Outbox) Next(ctx context.Context, owner any) (*Delivery, error) {
	o.mu.Lock()
	for {
		if o.stopped {
			o.mu.Unlock()
			return nil, ErrOutboxClosed
		}
		if len(o.ready) > 0 {
			d := o.ready[0]
			o.ready[0] = nil
			o.ready = o.ready[1:]
			d.state, d.owner, d.sentAt = inFlight, owner, time.Now()
			d.attempts++
			o.inFlight++
			o.delivered.Add(1)
			if d.attempts > 1 {
				o.redelivered.Add(1)
			}
			o.mu.Unlock()
			return d, nil
		}
		ch := o.changed
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		o.mu.Lock()
	}
}

// Ack acknowledges the event id, from whichever sender. Unknown ids (acked
// already, never read, or from before a restart) are ignored; it reports
// whether the ack was taken.
func (o *Outbox) Ack(id uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	d := o.byID[id]
	if d == nil || d.state == acked || d.state == waiting {
		return false
	}
	if d.state == ready {
		o.removeReady(d)
	} else {
		o.inFlight--
	}
	d.state, d.owner, d.Body = acked, nil, nil
	delete(o.byID, id)
	o.ackedTotal.Add(1)
	q := o.repos[d.DID]
	q.outstanding--
	if q.outstanding == 0 {
		q.liveOutstand = false
	}
	o.release(q)
	if q.outstanding == 0 && len(q.waiting) == 0 {
		delete(o.repos, d.DID)
	}
	// Drop the acknowledged head of the order.
	n := 0
	for n < len(o.order) && o.order[n].state == acked {
		o.order[n] = nil
		n++
	}
	o.order = o.order[n:]
	o.signal()
	return true
}

func (o *Outbox) removeReady(d *Delivery) {
	for i, r := range o.ready {
		if r == d {
			o.ready = append(o.ready[:i], o.ready[i+1:]...)
			return
		}
	}
}

// Requeue puts a delivery of owner that was not acknowledged back at the
// front of the ready queue, to be sent again.
func (o *Outbox) Requeue(d *Delivery, owner any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.requeueLocked(d, owner) {
		o.signal()
	}
}

func (o *Outbox) requeueLocked(d *Delivery, owner any) bool {
	if d.state != inFlight || d.owner != owner || o.byID[d.ID] != d {
		return false
	}
	d.state, d.owner = ready, nil
	o.inFlight--
	o.ready = append([]*Delivery{d}, o.ready...)
	return true
}

// RequeueOwner gives back every delivery owner holds, for a sender that
// went away (a closed connection), and returns how many.
func (o *Outbox) RequeueOwner(owner any) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	var back []*Delivery
	for _, d := range o.order {
		if d.state == inFlight && d.owner == owner {
			back = append(back, d)
		}
	}
	for i := len(back) - 1; i >= 0; i-- {
		o.requeueLocked(back[i], owner)
	}
	if len(back) > 0 {
		o.signal()
	}
	return len(back)
}

// requeueTimedOut gives back deliveries in flight for longer than the
// retry timeout.
func (o *Outbox) requeueTimedOut(now time.Time) int {
	if o.opts.RetryTimeout < 0 {
		return 0
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var back []*Delivery
	for _, d := range o.order {
		if d.state == inFlight && now.Sub(d.sentAt) >= o.opts.RetryTimeout {
			back = append(back, d)
		}
	}
	for i := len(back) - 1; i >= 0; i-- {
		o.requeueLocked(back[i], back[i].owner)
	}
	if len(back) > 0 {
		o.signal()
	}
	return len(back)
}

// position is the highest id at or below which every event read is
// acknowledged (or skipped). o.mu must be held.
func (o *Outbox) position() uint64 {
	if len(o.order) > 0 {
		return o.order[0].ID - 1
	}
	return o.read
}

// saveLoop stores the position when it moved, every SaveInterval, and
// requeues timed-out deliveries; once done is closed it saves a last time.
func (o *Outbox) saveLoop(ctx context.Context, done <-chan struct{}, sub *stream.Subscription) error {
	t := time.NewTicker(o.opts.SaveInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return o.save(ctx, sub)
		case now := <-t.C:
			if n := o.requeueTimedOut(now); n > 0 {
				o.opts.Logger.Info("tapcompat: redelivering events not acknowledged in time",
					"outbox", o.opts.Name, "count", n, "timeout", o.opts.RetryTimeout)
			}
			if err := o.save(ctx, sub); err != nil {
				return err
			}
		}
	}
}

func (o *Outbox) save(ctx context.Context, sub *stream.Subscription) error {
	o.mu.Lock()
	pos, stored := o.position(), o.stored
	o.mu.Unlock()
	if pos <= stored {
		return nil
	}
	if err := sub.Ack(ctx, pos); err != nil {
		return fmt.Errorf("tapcompat: outbox %s: save position %d: %w", o.opts.Name, pos, err)
	}
	o.mu.Lock()
	o.stored = max(o.stored, pos)
	o.mu.Unlock()
	return nil
}

// Stats returns the outbox's counters.
func (o *Outbox) Stats() OutboxStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return OutboxStats{
		Name:        o.opts.Name,
		Acked:       o.stored,
		Read:        o.read,
		Pending:     len(o.byID),
		InFlight:    o.inFlight,
		Delivered:   o.delivered.Load(),
		Redelivered: o.redelivered.Load(),
		AckedTotal:  o.ackedTotal.Load(),
		Skipped:     o.skipped.Load(),
	}
}

// countRetry counts one more send of a delivery its sender retries on its
// own (a failed webhook post).
func (o *Outbox) countRetry() {
	o.delivered.Add(1)
	o.redelivered.Add(1)
}
