package cistern

import (
	"context"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// Event is one entry of the event log: a record change, an identity change
// or an account status change. See store.Event for its fields; its JSON
// form is stream.EventJSON.
type Event = store.Event

// Subscribe returns a subscription to the event log: the retained events
// after opts.Cursor (0: the whole retained log), then live events, in id
// order, with no gap and no duplicate. See stream.SubscribeOptions for live
// only starts, durable named consumers (resume after the last Ack) and
// server-side filters. A cursor older than the retained log gets
// stream.ErrOutdatedCursor unless opts.FromOldest is set.
func (ix *Indexer) Subscribe(ctx context.Context, opts stream.SubscribeOptions) (*stream.Subscription, error) {
	if ix.closed.Load() {
		return nil, ErrClosed
	}
	return ix.events.Subscribe(ctx, opts)
}

// Events returns the event log, for consumer management and pruning.
func (ix *Indexer) Events() *stream.Log { return ix.events }
