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
// Options.Strategy chooses how a repo is fetched. StrategyFull downloads it
// whole. StrategySparse fetches the signed commit (getLatestCommit, then the
// commit block with com.atproto.sync.getBlocks), verifies it, then walks the
// MST level by level fetching, in getBlocks batches, only the nodes whose
// key span meets the key ranges of the stored collections (records are keyed
// collection/rkey, so a collection or an NSID prefix is one range); it
// diffs those leaves against the store and fetches only the record blocks
// of creates and updates. Every block is checked against the CID that names
// it. The records stored are the same, CID for CID, as with StrategyFull.
// StrategyAuto, the default, chooses per repo.
//
// Memory is bounded: CARs in flight share a byte budget (a repo larger than
// what is left waits for its turn), the diff reads the stored records page by
// page and never builds a map of a whole repo, and each write batch holds at
// most BatchSize record values. PDS hosts are treated politely: a bounded
// number of requests per host, optional pacing, and a 429 pauses that host
// alone until the time it asked for.
package backfill
