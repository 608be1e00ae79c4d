// Package store defines what cistern persists and the interface a database
// must offer to hold it.
//
// Everything the indexer remembers goes through a Store: repo states, the
// records of tracked repos, the content-addressed record values, the event
// log, the backfill queue, the buffer of live commits held while a repo
// backfills, cursors and other metadata, and counters. The indexer groups
// many writes into one transaction (Update), so a Store needs no batching of
// its own; readers (View) run beside the single writer and see only committed
// transactions.
//
// The interface is shaped so that a SQL database can implement it: every
// operation is a point read or write, or an ordered range scan with a cursor
// and a limit. store/boltstore is the default implementation on bbolt, and
// store/storetest is the conformance suite any implementation can run.
package store

import (
	"context"
	"errors"
	"time"
)

var (
	// ErrNotFound is returned when a repo, record, event or block is absent.
	ErrNotFound = errors.New("store: not found")
	// ErrSchemaVersion is returned by an implementation's Open when the
	// database was written by a different schema version.
	ErrSchemaVersion = errors.New("store: unsupported schema version")
	// ErrClosed is returned by View and Update after Close.
	ErrClosed = errors.New("store: closed")
	// ErrReadOnly is returned by write methods called through a read
	// transaction, where an implementation can detect it.
	ErrReadOnly = errors.New("store: read-only transaction")
)

// Store is a transactional database for everything the indexer persists.
//
// Implementations must be safe for concurrent use. View transactions may run
// concurrently with each other and with one Update; an Update never observes
// or exposes a partial Update of another goroutine. Every method of a Tx or
// ReadTx must only be called from inside the function it was passed to, and
// values returned from a transaction (byte slices included) must stay valid
// after it ends.
type Store interface {
	// View runs fn in a read-only transaction that sees a consistent snapshot
	// of committed data. The error of fn is returned as is.
	View(ctx context.Context, fn func(tx ReadTx) error) error
	// Update runs fn in a read-write transaction. If fn returns nil the
	// transaction is committed durably before Update returns; otherwise
	// nothing fn did is kept (event ids and sequences included) and fn's
	// error is returned.
	Update(ctx context.Context, fn func(tx Tx) error) error
	// Size reports the bytes the store occupies on disk, or 0 if unknown.
	Size() int64
	// Close releases the store. It waits for running transactions.
	Close() error
}

// ReadTx reads committed data. Scans call fn for each item in order until fn
// returns false or an error; an error from fn is returned by the scan.
type ReadTx interface {
	// Repo returns the state of one repo, or ErrNotFound.
	Repo(did string) (*Repo, error)
	// RepoByHandle returns the repo whose Handle is h (compared without
	// case), or ErrNotFound. "handle.invalid" names no repo.
	RepoByHandle(h string) (*Repo, error)
	// ScanRepos visits repos in DID order, starting after the DID `after`
	// ("" for the first).
	ScanRepos(after string, fn func(r *Repo) (bool, error)) error

	// Record returns one record with its value, or ErrNotFound.
	Record(did, collection, rkey string) (*Record, error)
	// ScanRecords visits the records of one repo in repo-path order
	// (collection, "/", rkey, compared as bytes: the MST order). If
	// collection is non-empty only that collection is visited. Scanning
	// starts strictly after the record key `after` ("" for the first) in
	// the direction given; reverse visits in descending order. Values are
	// loaded only if withValues is set.
	ScanRecords(q RecordScan, fn func(r *Record) (bool, error)) error
	// ScanCollection visits the records of one collection across all repos,
	// most recently written first, starting strictly after position `after`
	// (0 for the newest). Record.Seq is the position, usable as a cursor.
	ScanCollection(collection string, after uint64, fn func(r *Record) (bool, error)) error
	// CountRecords counts the records of a repo, in one collection if
	// collection is non-empty.
	CountRecords(did, collection string) (int64, error)
	// Collections returns the collections a repo holds records in, sorted.
	Collections(did string) ([]string, error)

	// Block returns a record value of the repo did by its CID bytes, or
	// ErrNotFound. Blocks are stored per repo: the same value in two repos
	// is two blocks, each with its own references.
	Block(did string, cid []byte) ([]byte, error)
	// BlockRefs returns the reference count of a repo's block (0 if
	// absent): the records of did and the retained record events of did
	// naming cid.
	BlockRefs(did string, cid []byte) (uint64, error)

	// Event returns one event with its record value, or ErrNotFound.
	Event(id uint64) (*Event, error)
	// ScanEvents visits events in id order starting strictly after id
	// `after`, with record values loaded.
	ScanEvents(after uint64, fn func(ev *Event) (bool, error)) error
	// EventBounds returns the ids of the oldest and newest retained events;
	// both are 0 when the log is empty. newest is the last id ever assigned
	// even when every event has been pruned.
	EventBounds() (oldest, newest uint64, err error)
	// EventAtTime returns the id of the first event whose Time is at or
	// after t, found through an index kept with the log, not by scanning
	// it; 0 when no event at or after t was ever appended. It treats the
	// log's times as their running maximum in id order: it returns the
	// first id at which that maximum reaches t, so every event with a Time
	// at or after t has an id at least the one returned, and when times
	// are non-decreasing in id order (as cistern's writer stamps them) the
	// answer is exact. Pruned events count: if one with a Time at or after
	// t has been pruned, the id returned is below the oldest retained
	// event (EventBounds), which is how a caller learns that its time is
	// older than the retained log.
	EventAtTime(t time.Time) (uint64, error)

	// ScanBacklinks visits the records that link to q.Target from the
	// source (q.Collection, q.Path), newest first (by the linking record's
	// Seq; oldest first with q.Reverse), starting strictly after position
	// q.After. Only links written with PutLinks are indexed. Target,
	// collection and path match exactly (no prefixes).
	ScanBacklinks(q BacklinkScan, fn func(b *Backlink) (bool, error)) error
	// CountBacklinks counts the records, and the distinct DIDs, linking to
	// target from the source (collection, path), without visiting them.
	// A target nothing links to counts zero, without error.
	CountBacklinks(target, collection, path string) (BacklinkCount, error)
	// ScanLinkSources visits every source (collection, path) that links to
	// target, in (collection, path) order (by collection, then path, each
	// compared as bytes), with its count. A source whose last link was
	// removed is not visited.
	ScanLinkSources(target string, fn func(collection, path string, n BacklinkCount) (bool, error)) error

	// ScanQueue visits queued repos in order of due time, then DID.
	ScanQueue(fn func(did string, due time.Time) (bool, error)) error

	// ScanBuffer visits the buffered live commits of one repo in rev order.
	ScanBuffer(did string, fn func(c *BufferedCommit) (bool, error)) error

	// Meta returns a metadata value, or ErrNotFound.
	Meta(key string) ([]byte, error)

	// Counts returns the store's counters.
	Counts() (Counts, error)
}

// Tx reads and writes inside one Update.
type Tx interface {
	ReadTx

	// PutRepo creates or replaces a repo's state.
	PutRepo(r *Repo) error
	// DeleteRepo removes a repo's state, its queue entry and its buffered
	// commits. It does not remove records (use DeleteRecord for each, with
	// its event). Deleting an absent repo is not an error.
	DeleteRepo(did string) error

	// PutRecord creates or replaces a record. The value is stored
	// content-addressed under (r.DID, r.CID) and gains one reference; the
	// value of a replaced record loses one. r.Seq is assigned and returned in r.
	PutRecord(r *Record) error
	// DeleteRecord removes a record, dropping one reference to its value,
	// and removes the links it held (PutLinks). Deleting an absent record
	// is not an error.
	DeleteRecord(did, collection, rkey string) error
	// PutLinks replaces the links that the record (did, collection, rkey)
	// holds in the backlink index with links, at position seq (the
	// record's Seq, as PutRecord assigned it). Empty links removes them.
	// Duplicates in links (equal Target and Path) are stored once; one
	// target at two paths is two links. PutRecord does not touch the
	// index: a caller that indexes links calls PutLinks after each
	// PutRecord, in the same transaction. PutLinks does not check that
	// the record is stored. It refuses what ValidateLinks refuses (an
	// empty did, collection or rkey, position 0, a link with an empty
	// Target or Path), writing nothing.
	PutLinks(did, collection, rkey string, seq uint64, links []Link) error

	// AppendEvent assigns ev.ID, the next id of the log, and stores the
	// event. A record event with a CID gains a reference to the block
	// (ev.DID, ev.CID), so
	// the value stays readable while the event is retained; ev.Record, if
	// set, is stored as the block when it is absent.
	AppendEvent(ev *Event) error
	// PruneEvents deletes events with id <= through, oldest first, at most
	// limit of them (0: no limit), dropping their block references, and
	// returns how many it deleted.
	PruneEvents(through uint64, limit int) (int, error)

	// Enqueue puts a repo in the backfill queue, due at the given time,
	// replacing any earlier entry for it.
	Enqueue(did string, due time.Time) error
	// Dequeue removes a repo from the queue. Absent is not an error.
	Dequeue(did string) error

	// PutBuffer stores a live commit held while its repo backfills,
	// replacing one of the same DID and rev.
	PutBuffer(c *BufferedCommit) error
	// DeleteBuffer removes one buffered commit; with rev "" it removes all of
	// the repo's buffered commits.
	DeleteBuffer(did, rev string) error

	// PutMeta stores a metadata value.
	PutMeta(key string, value []byte) error
	// DeleteMeta removes a metadata value. Absent is not an error.
	DeleteMeta(key string) error
}

// RecordScan selects records of one repo for ScanRecords.
type RecordScan struct {
	DID        string
	Collection string // "" for every collection
	// After is the key to start after: an rkey when Collection is set,
	// otherwise a repo path "collection/rkey". "" starts at the first
	// (or, reversed, the last).
	After      string
	Reverse    bool
	WithValues bool
}

// Counts are counters the store keeps as it is written.
type Counts struct {
	Repos        int64
	ReposByState map[RepoState]int64
	Records      int64
	Events       int64 // retained events
	Blocks       int64
	BlockBytes   int64
	Links        int64 // entries in the backlink index: distinct (record, Target, Path)
}
