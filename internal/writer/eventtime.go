package writer

import (
	"errors"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// eventClock makes event times strictly increasing to the microsecond in
// id order: an event whose Time is not after the previous event's, at
// microsecond precision, is stamped one microsecond after it. Producers
// stamp events with time.Now() before the writer orders them (and a
// backfill stamps a whole batch with one time), so without it times could
// repeat or go back a little; with it, an event's unix-microsecond time
// names its place in the log (Jetstream's time_us cursor relies on it).
type eventClock struct {
	loaded bool
	last   int64 // unix microseconds of the newest event written
}

// load reads the newest event's time, once.
func (c *eventClock) load(tx store.ReadTx) error {
	if c.loaded {
		return nil
	}
	_, newest, err := tx.EventBounds()
	if err != nil {
		return err
	}
	if newest > 0 {
		ev, err := tx.Event(newest)
		switch {
		case err == nil:
			c.last = ev.Time.UnixMicro()
		case !errors.Is(err, store.ErrNotFound): // pruned: nothing to follow
			return err
		}
	}
	c.loaded = true
	return nil
}

// clockedTx is the Tx the writer hands to closures: AppendEvent advances
// the clock, and PutRecord indexes the record's links when links is set.
type clockedTx struct {
	store.Tx
	clock eventClock
	links func(r *store.Record) []store.Link
}

// PutRecord puts r and, with the backlink index on, replaces its links.
func (t *clockedTx) PutRecord(r *store.Record) error {
	if err := t.Tx.PutRecord(r); err != nil {
		return err
	}
	if t.links == nil {
		return nil
	}
	return t.Tx.PutLinks(r.DID, r.Collection, r.RKey, r.Seq, t.links(r))
}

func (t *clockedTx) AppendEvent(ev *store.Event) error {
	us := ev.Time.UnixMicro()
	if us <= t.clock.last {
		us = t.clock.last + 1
		ev.Time = time.UnixMicro(us).UTC()
	}
	if err := t.Tx.AppendEvent(ev); err != nil {
		return err
	}
	t.clock.last = us
	return nil
}
