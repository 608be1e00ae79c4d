package stream

import (
	"context"
	"errors"
	"fmt"
	"github.com/cistern-dev/cistern/backlinks"
	"sync"
	"sync/atomic"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
)

// Origin selects events by where they came from.
type Origin uint8

// Origins. The zero value selects every event.
const (
	// AnyOrigin selects live and backfill events alike.
	AnyOrigin Origin = iota
	// LiveOnly selects events from the firehose (Event.Live).
	LiveOnly
	// BackfillOnly selects events written by backfills (not Event.Live).
	BackfillOnly
)

// String returns "any", "live" or "backfill".
func (o Origin) String() string {
	switch o {
	case AnyOrigin:
		return "any"
	case LiveOnly:
		return "live"
	case BackfillOnly:
		return "backfill"
	}
	return fmt.Sprintf("Origin(%d)", uint8(o))
}

// ParseOrigin parses "any" (or ""), "live" or "backfill".
func ParseOrigin(s string) (Origin, error) {
	switch s {
	case "", "any":
		return AnyOrigin, nil
	case "live":
		return LiveOnly, nil
	case "backfill":
		return BackfillOnly, nil
	}
	return 0, fmt.Errorf("%w: unknown origin %q (want any, live or backfill)", ErrInvalidOptions, s)
}

// ParseKind parses an event kind name: "record", "identity", "account" or
// "repo".
func ParseKind(s string) (store.EventKind, error) {
	for _, k := range []store.EventKind{store.KindRecord, store.KindIdentity, store.KindAccount, store.KindRepo} {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown event kind %q (want record, identity, account or repo)", ErrInvalidOptions, s)
}

// SubscribeOptions say where a subscription starts and which events it
// delivers. The zero value delivers the whole retained log, then live
// events, unfiltered.
type SubscribeOptions struct {
	// Cursor is the id of the last event the consumer has processed;
	// delivery starts after it. 0 delivers the whole retained log.
	Cursor uint64
	// Live starts at the newest event, delivering only events appended
	// afterwards; Cursor is ignored.
	Live bool
	// Name makes the subscription a durable consumer: it starts after the
	// last id acknowledged under that name (Subscription.Ack), persisted in
	// the store, and Cursor (or Live) applies only when nothing has been
	// acknowledged yet. Names are 1 to 128 characters of letters, digits and
	// ".-_:". One Log allows one active subscription per name.
	Name string
	// Collections keeps only record events whose collection matches one of
	// these patterns (see filter.ParsePattern); identity and account events
	// pass. Empty keeps every collection.
	Collections []string
	// DIDs keeps only events of these repos. Empty keeps every repo.
	DIDs []string
	// Kinds keeps only events of these kinds. Empty keeps every kind.
	Kinds []store.EventKind
	// LinksTo keeps only record events whose record links to one of these
	// targets (at-uris or DIDs, as package backlinks finds links: at any
	// path of the value), such as the likes, reposts, replies and quotes of
	// a post, or the follows of an account. Identity and account events,
	// and deletes (which carry no record), do not pass. It needs no
	// backlink index. Empty keeps every event.
	LinksTo []string
	// Origin keeps only live or only backfill events. Default AnyOrigin.
	Origin Origin
	// FromOldest, when the cursor is older than the retained log, starts
	// from the oldest retained event instead of failing with
	// ErrOutdatedCursor, and reports the gap with a Notice. The same holds
	// when retention later prunes events the subscription has not read.
	FromOldest bool
}

// Notice tells a subscriber about a gap in its delivery: events after
// Cursor up to Oldest-1 were pruned before it read them. It is sent on
// Subscription.Notices before the first event after the gap.
type Notice struct {
	// Name says what happened: "OutdatedCursor".
	Name string
	// Message says it in words.
	Message string
	// Cursor is the position the subscription had reached.
	Cursor uint64
	// Oldest is the oldest retained event when the gap was found; delivery
	// resumes with the first matching event whose id is >= Oldest.
	Oldest uint64
}

// matcher is the compiled filter of a subscription.
type matcher struct {
	patterns filter.Patterns
	dids     map[string]struct{}
	kinds    [5]bool // indexed by EventKind; all false: every kind
	anyKind  bool
	origin   Origin
	linksTo  map[string]struct{}
}

func compile(o *SubscribeOptions) (*matcher, error) {
	m := &matcher{origin: o.Origin, anyKind: len(o.Kinds) == 0}
	if o.Origin > BackfillOnly {
		return nil, fmt.Errorf("%w: unknown origin %d", ErrInvalidOptions, o.Origin)
	}
	if len(o.Collections) > 0 {
		ps, err := filter.ParsePatterns(o.Collections)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOptions, err)
		}
		m.patterns = ps
	}
	if len(o.DIDs) > 0 {
		m.dids = make(map[string]struct{}, len(o.DIDs))
		for _, d := range o.DIDs {
			if _, err := syntax.ParseDID(d); err != nil {
				return nil, fmt.Errorf("%w: DID %q: %w", ErrInvalidOptions, d, err)
			}
			m.dids[d] = struct{}{}
		}
	}
	if len(o.LinksTo) > 0 {
		m.linksTo = make(map[string]struct{}, len(o.LinksTo))
		for _, target := range o.LinksTo {
			if err := backlinks.ParseTarget(target); err != nil {
				return nil, fmt.Errorf("%w: links to: %w", ErrInvalidOptions, err)
			}
			m.linksTo[target] = struct{}{}
		}
	}
	for _, k := range o.Kinds {
		if k < store.KindRecord || k > store.KindRepo {
			return nil, fmt.Errorf("%w: unknown event kind %d", ErrInvalidOptions, k)
		}
		m.kinds[k] = true
	}
	if o.Name != "" {
		if err := checkName(o.Name); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *matcher) match(ev *store.Event) bool {
	if !m.anyKind && (int(ev.Kind) >= len(m.kinds) || !m.kinds[ev.Kind]) {
		return false
	}
	switch m.origin {
	case LiveOnly:
		if !ev.Live {
			return false
		}
	case BackfillOnly:
		if ev.Live {
			return false
		}
	}
	if m.dids != nil {
		if _, ok := m.dids[ev.DID]; !ok {
			return false
		}
	}
	if m.patterns != nil && ev.Kind == store.KindRecord && !m.patterns.Match(ev.Collection) {
		return false
	}
	if m.linksTo != nil && !m.linksToTarget(ev) {
		return false
	}
	return true
}

// linksToTarget reports whether ev is a record event whose record links to
// one of the targets of LinksTo.
func (m *matcher) linksToTarget(ev *store.Event) bool {
	if ev.Kind != store.KindRecord || len(ev.Record) == 0 {
		return false
	}
	links, _ := backlinks.Extract(ev.Record)
	for _, l := range links {
		if _, ok := m.linksTo[l.Target]; ok {
			return true
		}
	}
	return false
}

// Subscription delivers events of the log in id order: first the retained
// events after its starting point, then live ones as they are committed,
// with no gap and no duplicate between the two.
//
// Events is closed by the subscription when it ends; Err then says why.
// A consumer that stops reading holds at most Options.PageSize +
// Options.Buffer events and its goroutine.
type Subscription struct {
	log     *Log
	m       *matcher
	name    string
	events  chan *store.Event
	notices chan Notice

	fromOldest bool
	start      uint64
	pos        atomic.Uint64 // last id read from the store (delivered or filtered out)
	sent       atomic.Uint64 // id of the last event handed to the channel

	ctx      context.Context
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
	err      error // set before done is closed
}

// Subscribe starts a subscription. It checks the options and the starting
// point synchronously: invalid options fail with an error wrapping
// ErrInvalidOptions; a cursor beyond the newest event fails with
// ErrFutureCursor; a cursor older than the retained log fails with
// ErrOutdatedCursor unless opts.FromOldest is set. The subscription runs
// until ctx ends, Close is called, or the Log is closed.
func (l *Log) Subscribe(ctx context.Context, opts SubscribeOptions) (*Subscription, error) {
	m, err := compile(&opts)
	if err != nil {
		return nil, err
	}
	s := &Subscription{
		log:        l,
		m:          m,
		name:       opts.Name,
		events:     make(chan *store.Event, l.opts.Buffer),
		notices:    make(chan Notice, 1),
		fromOldest: opts.FromOldest,
		ctx:        ctx,
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
	}

	var acked uint64
	var hasAck bool
	var oldest, newest uint64
	err = l.st.View(ctx, func(tx store.ReadTx) error {
		var err error
		if opts.Name != "" {
			c, err := readConsumer(tx, opts.Name)
			switch {
			case err == nil:
				acked, hasAck = c.Acked, true
			case !errors.Is(err, store.ErrNotFound):
				return err
			}
		}
		oldest, newest, err = tx.EventBounds()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("stream: subscribe: %w", err)
	}

	var start uint64
	switch {
	case hasAck:
		start = acked
	case opts.Live:
		start = newest
	case opts.Cursor == 0:
		start = firstPosition(oldest, newest)
	default:
		start = opts.Cursor
	}
	if start > newest {
		return nil, fmt.Errorf("%w: cursor %d, newest event %d", ErrFutureCursor, start, newest)
	}
	if outdated(start, oldest, newest) {
		if !opts.FromOldest {
			return nil, fmt.Errorf("%w: cursor %d, oldest retained event %d", ErrOutdatedCursor, start, oldest)
		}
		s.notices <- outdatedNotice(start, oldest, newest)
		start = firstPosition(oldest, newest)
	}
	s.start = start
	s.pos.Store(start)

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if s.name != "" {
		if l.names[s.name] {
			l.mu.Unlock()
			return nil, fmt.Errorf("%w: %q", ErrConsumerBusy, s.name)
		}
		l.names[s.name] = true
	}
	l.subs.Add(1)
	l.active.Add(1)
	l.mu.Unlock()

	go s.run()
	return s, nil
}

// firstPosition is the position before the oldest retained event, or the
// newest id when nothing is retained.
func firstPosition(oldest, newest uint64) uint64 {
	if oldest == 0 {
		return newest
	}
	return oldest - 1
}

// outdated reports whether events after pos have been pruned. Ids are
// assigned without gaps, so anything between pos and the oldest retained
// event is gone.
func outdated(pos, oldest, newest uint64) bool {
	if oldest == 0 {
		return pos < newest
	}
	return pos+1 < oldest
}

func outdatedNotice(pos, oldest, newest uint64) Notice {
	first := oldest
	if first == 0 {
		first = newest + 1
	}
	return Notice{
		Name: "OutdatedCursor",
		Message: fmt.Sprintf("events %d to %d were pruned; continuing from the oldest retained event %d",
			pos+1, first-1, first),
		Cursor: pos,
		Oldest: first,
	}
}

// Events returns the channel of delivered events. It is closed when the
// subscription ends. Events must not be modified.
func (s *Subscription) Events() <-chan *store.Event { return s.events }

// Notices returns the channel of gap notices (only with FromOldest). A
// notice is sent before the first event after the gap, so a consumer that
// checks Notices without blocking before handling each event sees it no
// later than that event; events at or before Notice.Cursor, already
// buffered, may still come after it. Notices not yet read are merged into
// one; reading them is optional.
func (s *Subscription) Notices() <-chan Notice { return s.notices }

// Start returns the position the subscription started after: the id of the
// last event it considers already processed.
func (s *Subscription) Start() uint64 { return s.start }

// Position returns the id of the last event read from the store, delivered
// or filtered out. Events up to it may still sit in the channel.
func (s *Subscription) Position() uint64 { return s.pos.Load() }

// Done is closed when the subscription has ended and its goroutine
// returned.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err says why the subscription ended: nil after Close, the context's error
// when its context ended, ErrClosed when the Log was closed,
// ErrOutdatedCursor when retention pruned events it had not read yet (and
// FromOldest was not set), or a store error. It returns nil while the
// subscription runs.
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close ends the subscription and waits for its goroutine. Events not yet
// read are dropped. Close is idempotent.
func (s *Subscription) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

func (s *Subscription) run() {
	l := s.log
	defer func() {
		if s.name != "" {
			l.mu.Lock()
			delete(l.names, s.name)
			l.mu.Unlock()
		}
		l.active.Add(-1)
		close(s.events)
		close(s.done)
		l.subs.Done()
	}()
	s.err = s.loop()
	if s.err != nil && !errors.Is(s.err, context.Canceled) && !errors.Is(s.err, ErrOutdatedCursor) &&
		!errors.Is(s.err, ErrClosed) && !errors.Is(s.err, context.DeadlineExceeded) {
		l.opts.Logger.Warn("stream: subscription failed", "name", s.name, "position", s.pos.Load(), "err", s.err)
	}
}

// loop reads pages after the last position and delivers the matching
// events. The store is never held open while waiting to send.
func (s *Subscription) loop() error {
	l := s.log
	page := make([]*store.Event, 0, l.opts.PageSize)
	scanLimit := l.opts.PageSize * 8
	for {
		select {
		case <-s.stop:
			return nil
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-l.closedCh:
			return ErrClosed
		default:
		}

		wake := l.wakeCh()
		pos := s.pos.Load()
		next := pos
		var gap *Notice
		err := l.st.View(s.ctx, func(tx store.ReadTx) error {
			oldest, newest, err := tx.EventBounds()
			if err != nil {
				return err
			}
			if outdated(pos, oldest, newest) {
				if !s.fromOldest {
					return fmt.Errorf("%w: position %d, oldest retained event %d", ErrOutdatedCursor, pos, oldest)
				}
				n := outdatedNotice(pos, oldest, newest)
				gap = &n
				next = firstPosition(oldest, newest)
			}
			scanned := 0
			return tx.ScanEvents(next, func(ev *store.Event) (bool, error) {
				next = ev.ID
				scanned++
				if s.m.match(ev) {
					page = append(page, ev)
				}
				return len(page) < l.opts.PageSize && scanned < scanLimit, nil
			})
		})
		if err != nil {
			clear(page)
			return err
		}
		if gap != nil {
			s.notify(*gap)
		}
		if next == pos {
			select {
			case <-wake:
				continue
			case <-s.stop:
				return nil
			case <-s.ctx.Done():
				return s.ctx.Err()
			case <-l.closedCh:
				return ErrClosed
			}
		}
		for i, ev := range page {
			// Stored before the send: a consumer that acks an event as
			// soon as it receives it must find it counted as delivered.
			s.sent.Store(ev.ID)
			select {
			case s.events <- ev:
				page[i] = nil
			case <-s.stop:
				clear(page)
				return nil
			case <-s.ctx.Done():
				clear(page)
				return s.ctx.Err()
			case <-l.closedCh:
				clear(page)
				return ErrClosed
			}
		}
		page = page[:0]
		s.pos.Store(next)
	}
}

// notify puts n in the notices channel without blocking, merging it with a
// notice the consumer has not read yet. The subscription goroutine is the
// only sender, so the loop ends.
func (s *Subscription) notify(n Notice) {
	for {
		select {
		case s.notices <- n:
			return
		default:
		}
		select {
		case old := <-s.notices:
			n.Cursor = old.Cursor
			n.Message = fmt.Sprintf("events %d to %d were pruned; continuing from the oldest retained event %d",
				n.Cursor+1, n.Oldest-1, n.Oldest)
		default:
		}
	}
}
