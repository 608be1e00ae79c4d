// Package filter decides what part of the network is indexed.
//
// A Spec says which repos are tracked (the full network, explicit DIDs, or
// repos that hold a record in a signal collection; never an excluded DID) and
// which collections are stored and emitted (NSID patterns such as
// "app.bsky.feed.post" or "app.bsky.graph.*"). A Spec is plain data: it is
// validated with Validate, persisted as JSON, changed at runtime with a Patch,
// and compiled into a Filter that answers the per-event questions with map
// lookups. Diff tells the indexer what a change of Spec requires of it
// (re-backfill, deletions, newly tracked or excluded repos).
package filter
