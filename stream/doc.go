// Package stream reads the event log: ordered, replayable subscriptions,
// durable consumers and retention.
//
// The log itself lives in the store. The indexer's single writer appends
// events inside its write transactions, so ids are assigned in commit order
// and a reader never sees id N+1 before N; after each commit it calls
// Log.Notify. A Subscription is one loop over the store: it reads a page of
// events after the last id it has passed, hands the matching ones to its
// channel, and when a page comes back empty it waits for Notify. The store is
// the single source of truth, so there is no switch from "replay" to "live"
// that could drop or double an event, and a subscriber that falls behind
// costs no buffering: it simply reads older pages later.
//
// A subscription's memory is bounded by Options.PageSize events read from the
// store plus Options.Buffer events waiting in its channel, however far behind
// it is. Filters (collections, DIDs, kinds, origin) are applied here, before
// the channel; filtered-out events still advance the position.
//
// Retention (Options.MaxAge, Options.MaxEvents) is enforced by Log.Run in the
// background, in small transactions so that the writer is never held up for
// long. A cursor older than what is retained is refused with
// ErrOutdatedCursor, never silently moved forward; with
// SubscribeOptions.FromOldest the subscription instead reports a Notice and
// continues from the oldest retained event.
//
// Events render to JSON with AppendEventJSON, the format of the WebSocket
// endpoint in package httpapi.
package stream
