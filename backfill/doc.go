// Package backfill brings a repo from its PDS into the store.
//
// A Scheduler takes DIDs from the store's queue, fetches each repo's CAR
// (com.atproto.sync.getRepo), verifies the signed commit, walks the MST in key
// order and diffs it against the records already stored for that DID. The
// differences are handed to the write path as records and live:false events,
// in transactions of at most BatchSize changes; the repo's rev and data CID
// are written last. The scheduler owns no storage of its own: a crash at any
// point leaves the repo queued, and doing it again emits nothing twice,
// because the diff finds nothing left to do for what was already written.
//
// Memory is bounded: CARs in flight share a byte budget (a repo larger than
// what is left waits for its turn), the diff reads the stored records page by
// page and never builds a map of a whole repo, and each write batch holds at
// most BatchSize record values. PDS hosts are treated politely: a bounded
// number of requests per host, optional pacing, and a 429 pauses that host
// alone until the time it asked for.
package backfill
