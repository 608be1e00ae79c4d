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

// Consumers lists the durable consumers and the last id each acknowledged.
func (ix *Indexer) Consumers(ctx context.Context) ([]stream.Consumer, error) {
	out, err := ix.events.Consumers(ctx)
	return out, ix.closedErr(err)
}

// Consumer returns one durable consumer's position, or an error wrapping
// store.ErrNotFound.
func (ix *Indexer) Consumer(ctx context.Context, name string) (*stream.Consumer, error) {
	c, err := ix.events.Consumer(ctx, name)
	return c, ix.closedErr(err)
}

// DeleteConsumer forgets a durable consumer's position.
func (ix *Indexer) DeleteConsumer(ctx context.Context, name string) error {
	return ix.closedErr(ix.events.DeleteConsumer(ctx, name))
}

// Prune applies the retention policy now, as the background pruning of Run
// does, and returns how many events it removed.
func (ix *Indexer) Prune(ctx context.Context) (int, error) {
	n, err := ix.events.Prune(ctx)
	return n, ix.closedErr(err)
}
