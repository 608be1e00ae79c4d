// Package boltstore is the default store.Store, on go.etcd.io/bbolt.
//
// A DB is one bbolt file. bbolt has a single writer and fsyncs every commit,
// so throughput comes from grouping many writes into one Update; readers
// (View) run beside the writer on a consistent snapshot and never block it,
// except while the file grows past the memory map (see Options.MmapSize).
//
// Layout (schema version 6; Open migrates a version 3 file by building the
// time index from its events, a version 4 file by adding the empty backlink
// index, and a version 5 file as it is: version 6 added runs to the
// collection index and made the time index sparse, and a version 5 file is
// a valid version 6 file). Every key is binary and either fixed-width or
// length-prefixed, so no field is ever split on a separator byte. Strings in
// keys are prefixed with their length as a 2-byte big-endian integer (lp
// below); integers in keys are big-endian. In the buckets written per
// record a repo is named by its id, and in the collection index and events a
// collection by its id: 4 bytes assigned the first time something is stored
// under the name (see dids.go):
//
//	repos     DID                            → CBOR store.Repo
//	dids      DID                            → repo id
//	didnames  repo id                        → DID
//	collids   collection                     → collection id
//	collnames collection id                  → collection
//	records   repo id | collection "/" rkey  → uvarint seq | uvarint len | CID | rev
//	colls     repo id | collection           → uint64 record count
//	bycoll    collection id | seq            → repo id | rkey, or a run of
//	                                            records (see collrun.go)
//	blocks    repo id | CID                  → uvarint (refs<<1 | has value) | value
//	events    event id                       → binary store.Event (without value)
//	queue     due | DID                      → empty (due: 8-byte seconds, sign
//	                                            flipped, then 4-byte nanoseconds)
//	queuedid  DID                            → due
//	buffer    lp(DID) | rev                  → CBOR {seq, source, data}
//	meta      key                            → value (the host's metadata)
//	sys       "schema", counters             → uint64
//	          "evtimes/max"                  → the latest event time
//	evtimes   time (12 bytes, as queue)      → event id where the running
//	                                            maximum of event times rose
//	                                            to it, one entry per 64
//	                                            events at most (see
//	                                            eventtime.go)
//	links, linksrc, reclinks                 the backlink index (links.go)
//
// The event encoding is a format byte, kind, flags and action bytes, the time
// as varint Unix seconds and uvarint nanoseconds (exact to the nanosecond,
// read back in UTC), the repo and collection ids as uvarints (0 for none),
// then rev, rkey, CID, handle and status, each with a uvarint length. Repo
// times are CBOR RFC 3339 strings with nanoseconds, also exact.
//
// Records sort in repo-path order because neither an NSID nor a record key
// contains "/": comparing "collection/rkey" as bytes is the MST order. Record
// seq numbers come from the bycoll bucket's sequence and event ids from the
// events bucket's sequence, both advanced inside the write transaction, so
// they commit in order and a failed transaction consumes none. The events
// sequence outlives pruning, so EventBounds reports the last id ever assigned
// as newest; oldest is 0 whenever no event is retained.
//
// Record values are stored once per repo and CID, under the repo id so that
// one repo's values sit together in the file (a backfill appends a repo's
// values to a few pages at the end of the tree instead of scattering them over
// a tree keyed by hash), with their reference count in the same entry: each
// record and each retained record event of the repo holds one reference, and
// the block is deleted with its last reference. The same value in two repos
// is stored twice. A reference taken without a value (a record or event whose
// CID names no stored value) is counted all the same; the value is stored by
// the first write that brings it. A transaction keeps the blocks it touches in
// memory and writes each once, at commit, in key order, so a record and its
// event cost one read and one write of blocks; a repo whose id the
// transaction assigned is not read at all. Counters (records, events, blocks,
// block bytes, repos by state) are kept in sys and updated in the same
// transaction as the writes that change them, so Counts costs a few point
// reads.
//
// Pages split by appends (events, bycoll, records) are filled completely and
// pages of blocks to 90%, instead of bbolt's default half, so a store written
// in order is not half empty.
package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/fxamacker/cbor/v2"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the version of the layout this package reads and writes.
// It is stored in the file when it is created; Open migrates a version 3,
// 4 or 5 file and refuses any other.
const SchemaVersion = 6

// Options configure Open. The zero value (or a nil *Options) gives the
// defaults.
type Options struct {
	// NoSync skips the fsync after each commit. A crash of the process loses
	// nothing, but a crash of the machine may lose or corrupt recent
	// transactions. For tests and benchmarks only. Default false.
	NoSync bool
	// Timeout is how long Open waits for the file lock when another process
	// holds the file. Default 1s; negative waits indefinitely.
	Timeout time.Duration
	// MmapSize is the initial size of the memory map in bytes. Whenever the
	// file outgrows the map the writer waits for every open View to end, so
	// a map larger than the file avoids stalling writes behind long reads.
	// Virtual address space only; the file does not grow to it.
	// Default 256 MiB.
	MmapSize int
	// Logger receives the store's rare log lines (open, inconsistencies it
	// repairs). Default: discard.
	Logger *slog.Logger
}

func (o *Options) withDefaults() Options {
	var out Options
	if o != nil {
		out = *o
	}
	if out.Timeout == 0 {
		out.Timeout = time.Second
	} else if out.Timeout < 0 {
		out.Timeout = 0 // bbolt: wait indefinitely
	}
	if out.MmapSize <= 0 {
		out.MmapSize = 256 << 20
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out
}

// DB is a store.Store in one bbolt file. It is safe for concurrent use.
type DB struct {
	bolt   *bolt.DB
	path   string
	log    *slog.Logger
	enc    cbor.EncMode
	dec    cbor.DecMode
	closed atomic.Bool
}

var _ store.Store = (*DB)(nil)

// Bucket names.
var (
	bucketRepos     = []byte("repos")
	bucketRecords   = []byte("records")
	bucketColls     = []byte("colls")
	bucketByColl    = []byte("bycoll")
	bucketBlocks    = []byte("blocks")
	bucketEvents    = []byte("events")
	bucketQueue     = []byte("queue")
	bucketQueueDID  = []byte("queuedid")
	bucketBuffer    = []byte("buffer")
	bucketMeta      = []byte("meta")
	bucketSys       = []byte("sys")
	bucketDIDs      = []byte("dids")
	bucketDIDNames  = []byte("didnames")
	bucketCollIDs   = []byte("collids")
	bucketCollNames = []byte("collnames")
	bucketHandles   = []byte("handles")
	bucketEvTimes   = []byte("evtimes")
	bucketLinks     = []byte("links")
	bucketLinkSrc   = []byte("linksrc")
	bucketRecLinks  = []byte("reclinks")

	// linkBuckets came with schema version 5.
	linkBuckets = [][]byte{bucketLinks, bucketLinkSrc, bucketRecLinks}

	allBuckets = append([][]byte{bucketRepos, bucketRecords, bucketColls, bucketByColl,
		bucketBlocks, bucketEvents, bucketQueue, bucketQueueDID,
		bucketBuffer, bucketMeta, bucketSys, bucketDIDs, bucketDIDNames,
		bucketCollIDs, bucketCollNames, bucketHandles, bucketEvTimes}, linkBuckets...)

	keySchema = []byte("schema")
)

// ErrLocked is wrapped by the *LockedError Open returns when another
// process (or another Open in this one) holds the file.
var ErrLocked = errors.New("boltstore: file is locked by another process")

// LockedError says that Open gave up waiting for the file's lock: a bbolt
// file is opened by one process at a time. It wraps ErrLocked and bbolt's
// own error.
type LockedError struct {
	Path   string
	Waited time.Duration // Options.Timeout
	Err    error
}

// Error names the file and says what holds it.
func (e *LockedError) Error() string {
	return fmt.Sprintf("boltstore: open %s: the file is locked by another process (another cistern on the same file?); gave up after %s (Options.Timeout)", e.Path, e.Waited)
}

// Unwrap returns ErrLocked and bbolt's error.
func (e *LockedError) Unwrap() []error { return []error{ErrLocked, e.Err} }

// Open opens the store at path, creating the file if it does not exist. A
// file written by another schema version is refused with an error wrapping
// store.ErrSchemaVersion; a file another process holds, after Options.Timeout,
// with a *LockedError (wrapping ErrLocked).
func Open(path string, opts *Options) (*DB, error) {
	o := opts.withDefaults()
	enc, dec, err := codecs()
	if err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         o.Timeout,
		NoSync:          o.NoSync,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: o.MmapSize,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, &LockedError{Path: path, Waited: o.Timeout, Err: err}
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	db := &DB{bolt: bdb, path: path, log: o.Logger, enc: enc, dec: dec}
	if err := db.init(); err != nil {
		bdb.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	return db, nil
}

// init creates the buckets of a new file, or checks the schema version of an
// existing one.
func (db *DB) init() error {
	return db.bolt.Update(func(btx *bolt.Tx) error {
		sys := btx.Bucket(bucketSys)
		if sys != nil {
			v := sys.Get(keySchema)
			if len(v) != 8 {
				return fmt.Errorf("no schema version recorded (want %d): %w", SchemaVersion, store.ErrSchemaVersion)
			}
			got := binary.BigEndian.Uint64(v)
			if got >= 3 && got <= 5 {
				from := got
				if got == 3 {
					// Version 4 added the time index (evtimes).
					if err := migrateEventTimes(btx); err != nil {
						return fmt.Errorf("migrate schema 3 to 4: %w", err)
					}
				}
				if got <= 4 {
					// Version 5 added the backlink index, empty until
					// links are put.
					for _, name := range linkBuckets {
						if _, err := btx.CreateBucketIfNotExists(name); err != nil {
							return fmt.Errorf("migrate schema %d to 5: %w", from, err)
						}
					}
				}
				// Version 6 added runs to the collection index (see
				// collrun.go) and made the time index sparse (see
				// eventtime.go); a version 5 file, with an index entry
				// per record and per rise of event times, is a valid
				// version 6 file.
				db.log.Info("boltstore: migrated store", "path", db.path, "from", from, "to", SchemaVersion)
				got = SchemaVersion
				if err := sys.Put(keySchema, u64(SchemaVersion)); err != nil {
					return err
				}
			}
			if got != SchemaVersion {
				return fmt.Errorf("file has schema version %d, this build reads version %d: %w",
					got, SchemaVersion, store.ErrSchemaVersion)
			}
			for _, name := range allBuckets {
				if btx.Bucket(name) == nil {
					return fmt.Errorf("bucket %q missing", name)
				}
			}
			return nil
		}
		empty := true
		btx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return fmt.Errorf("not a cistern store (no schema version, other buckets present): %w", store.ErrSchemaVersion)
		}
		for _, name := range allBuckets {
			if _, err := btx.CreateBucket(name); err != nil {
				return fmt.Errorf("create bucket %q: %w", name, err)
			}
		}
		db.log.Info("boltstore: created store", "path", db.path, "schema", SchemaVersion)
		return btx.Bucket(bucketSys).Put(keySchema, u64(SchemaVersion))
	})
}

// Path returns the file the store was opened on.
func (db *DB) Path() string { return db.path }

// View runs fn in a read-only bbolt transaction. The store.ReadTx it is given
// also implements store.Tx, whose write methods return store.ErrReadOnly.
// View returns ctx.Err() without running fn if ctx is already done, and
// store.ErrClosed after Close.
func (db *DB) View(ctx context.Context, fn func(tx store.ReadTx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if db.closed.Load() {
		return store.ErrClosed
	}
	err := db.bolt.View(func(btx *bolt.Tx) error {
		return fn(db.newTx(btx))
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return err
}

// Update runs fn in a read-write bbolt transaction and commits it, with an
// fsync unless Options.NoSync, if fn returns nil. If fn returns an error
// nothing it wrote is kept and the error is returned as is. Update returns
// ctx.Err() without running fn if ctx is already done, and store.ErrClosed
// after Close.
//
// Byte slices passed to Tx methods (record values, CIDs, metadata) are
// referenced until the transaction ends and must not be modified before
// Update returns.
func (db *DB) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if db.closed.Load() {
		return store.ErrClosed
	}
	err := db.bolt.Update(func(btx *bolt.Tx) error {
		t := db.newTx(btx)
		t.writable = true
		if err := fn(t); err != nil {
			return err
		}
		if err := t.flushRun(); err != nil {
			return err
		}
		return t.flushCounts()
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return err
}

// Size returns the size of the file in bytes, or 0 if it cannot be read.
func (db *DB) Size() int64 {
	fi, err := os.Stat(db.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Close waits for running transactions to end and closes the file. Later
// calls to View and Update return store.ErrClosed; closing twice is not an
// error.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return nil
	}
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("boltstore: close %s: %w", db.path, err)
	}
	return nil
}
