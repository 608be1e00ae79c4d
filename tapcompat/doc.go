// Package tapcompat serves tap's protocol (indigo's cmd/tap) over a
// cistern Indexer, so that tap's consumers, such as npm's @atproto/tap
// client, can switch by changing a URL.
//
// A Service delivers the event log to one target: the /channel WebSocket,
// where each event is a JSON text frame and the client acknowledges it with
// {"type":"ack","id":N} (or, in fire-and-forget mode, writing it counts as
// the ack), or a webhook, which gets one POST per event and acknowledges it
// with a 2xx answer. Delivery is at least once, with tap's per-repo order:
// events of a repo that came from a backfill (live:false) may be in flight
// together, while a live event is sent only once everything before it in
// its repo is acknowledged, and nothing after it is sent until it is.
// Several /channel clients share the events (tap shards; it does not
// broadcast), and a client that goes away hands its unacknowledged events
// to the others.
//
// Delivery runs on an Outbox, a durable consumer of the event log
// (stream.SubscribeOptions.Name): the position below which every event is
// acknowledged is stored with the index, so after a restart, a crash
// included, delivery resumes there and nothing is lost; events acknowledged
// out of order past it may be delivered again, as tap allows.
//
// Events take tap's JSON forms. Record events are cistern's /stream form,
// which is tap's. Identity events ({"did","handle","is_active","status"})
// carry both cistern's identity events (a handle change) and its account
// events (active, takendown, suspended, deactivated, deleted; other
// statuses have no tap form and are skipped). A handle that is unknown or
// invalid is sent as "handle.invalid", since tap's clients require one.
//
// The read endpoints (/resolve, /info, /stats/...) are mounted by
// Register; /repos/add and /repos/remove are cistern's own (package
// httpapi), which accept tap's requests. See docs/tap.md.
package tapcompat
