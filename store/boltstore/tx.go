package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/cistern-dev/cistern/store"
	bolt "go.etcd.io/bbolt"
)

// tx is both the store.ReadTx of View and the store.Tx of Update.
type tx struct {
	db       *DB
	btx      *bolt.Tx
	writable bool

	repos, records, colls, byColl, blocks, events,
	queue, queueDID, buffer, meta, sys, handles, evtimes *bolt.Bucket
	// The backlink index (see links.go).
	links, linkSrc, recLinks *bolt.Bucket
	// The time index as this transaction sees it (see eventtime.go): the
	// running maximum of event times, whether this transaction raised it,
	// and the id of the last index entry.
	evMax                            []byte
	evLoaded, evMaxDirty, evHasEntry bool
	evLastID                         uint64
	kTime                            []byte // key buffer of the time index

	// repoDict and collDict are the repo and collection ids (see dids.go).
	repoDict, collDict dict
	// fresh holds the repos whose ids this transaction assigned.
	fresh map[uint32]*freshRepo

	// counts holds the counter changes of this transaction, written to sys
	// just before commit.
	counts countDelta
	// collDelta holds the changes to per-repo collection counts (colls) of
	// this transaction, by colls key, written just before commit or before
	// colls is read: a record write then costs no read and write of its
	// collection's count.
	collDelta map[string]*int64
	// blockCache holds the blocks this transaction read or changed, by
	// blocks key (see ref).
	blockCache map[string]*blockEntry
	blockSlab  []blockEntry // entries not yet handed out (newBlockEntry)

	// Key buffers, reused: bbolt copies a key on Put and does not keep the
	// key of a Get or Delete. One per kind of key, as they are built while
	// another is in use.
	kRec, kBlk, kColl, kEv, kCollCount []byte
	// recCur, blkCur and collCur are reused for point reads of records,
	// blocks and the collection index: a Seek on a kept cursor reuses its
	// stack, where Bucket.Get allocates a new one each time.
	recCur, blkCur, collCur *bolt.Cursor
	// run is the collection index run being built (see collrun.go).
	run collRun
	// arena holds the values written in this transaction, which bbolt
	// references until commit.
	arena []byte
}

// alloc returns an empty slice with capacity n from the transaction's
// arena; appending at most n bytes to it does not reallocate.
func (t *tx) alloc(n int) []byte {
	if cap(t.arena)-len(t.arena) < n {
		t.arena = make([]byte, 0, max(64<<10, n))
	}
	l := len(t.arena)
	t.arena = t.arena[:l+n]
	return t.arena[l : l : l+n]
}

var _ store.Tx = (*tx)(nil)

func (db *DB) newTx(btx *bolt.Tx) *tx {
	t := &tx{
		db:       db,
		btx:      btx,
		repos:    btx.Bucket(bucketRepos),
		records:  btx.Bucket(bucketRecords),
		colls:    btx.Bucket(bucketColls),
		byColl:   btx.Bucket(bucketByColl),
		blocks:   btx.Bucket(bucketBlocks),
		events:   btx.Bucket(bucketEvents),
		queue:    btx.Bucket(bucketQueue),
		queueDID: btx.Bucket(bucketQueueDID),
		buffer:   btx.Bucket(bucketBuffer),
		meta:     btx.Bucket(bucketMeta),
		sys:      btx.Bucket(bucketSys),
		handles:  btx.Bucket(bucketHandles),
		evtimes:  btx.Bucket(bucketEvTimes),
		links:    btx.Bucket(bucketLinks),
		linkSrc:  btx.Bucket(bucketLinkSrc),
		recLinks: btx.Bucket(bucketRecLinks),
		repoDict: dict{what: "DID", ids: btx.Bucket(bucketDIDs), names: btx.Bucket(bucketDIDNames)},
		collDict: dict{what: "collection", ids: btx.Bucket(bucketCollIDs), names: btx.Bucket(bucketCollNames)},
	}
	if btx.Writable() {
		// Written mostly in key order (events by id, the collection index
		// by seq, a repo's records in MST order under an id larger than
		// those before it): split pages are filled. A repo's blocks come
		// in hash order once it spans transactions: leave some room.
		t.events.FillPercent = fillAppend
		t.evtimes.FillPercent = fillAppend
		t.byColl.FillPercent = fillAppend
		t.records.FillPercent = fillAppend
		t.blocks.FillPercent = fillClustered
		t.repoDict.names.FillPercent = fillAppend
		t.recLinks.FillPercent = fillAppend
	}
	return t
}

// Page fill of split pages (bbolt's default is 0.5).
const (
	fillAppend    = 1.0
	fillClustered = 0.9
)

// getRecord reads a records entry; nil if absent.
func (t *tx) getRecord(key []byte) []byte {
	if t.recCur == nil {
		t.recCur = t.records.Cursor()
	}
	return seekExact(t.recCur, key)
}

// getBlock reads a blocks entry; nil if absent.
func (t *tx) getBlock(key []byte) []byte {
	if t.blkCur == nil {
		t.blkCur = t.blocks.Cursor()
	}
	return seekExact(t.blkCur, key)
}

// seekExact returns the value of key, as Bucket.Get (no nested buckets are
// kept in these buckets).
func seekExact(c *bolt.Cursor, key []byte) []byte {
	k, v := c.Seek(key)
	if v == nil || !bytes.Equal(k, key) {
		return nil
	}
	return v
}

// clone copies a byte slice out of the bbolt map; nil stays nil.
func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

func (t *tx) Repo(did string) (*store.Repo, error) {
	v := t.repos.Get([]byte(did))
	if v == nil {
		return nil, store.ErrNotFound
	}
	r := new(store.Repo)
	if err := t.db.dec.Unmarshal(v, r); err != nil {
		return nil, fmt.Errorf("boltstore: repo %s: %w", did, err)
	}
	return r, nil
}

func (t *tx) RepoByHandle(h string) (*store.Repo, error) {
	key := handleKey(h)
	if key == nil {
		return nil, store.ErrNotFound
	}
	did := t.handles.Get(key)
	if did == nil {
		return nil, store.ErrNotFound
	}
	return t.Repo(string(did))
}

// handleKey is the key of a handle in the handle index, nil for none.
func handleKey(h string) []byte {
	if h == "" || strings.EqualFold(h, "handle.invalid") {
		return nil
	}
	return []byte(strings.ToLower(h))
}

func (t *tx) ScanRepos(after string, fn func(r *store.Repo) (bool, error)) error {
	c := t.repos.Cursor()
	k, v := c.Seek([]byte(after))
	if after != "" && k != nil && string(k) == after {
		k, v = c.Next()
	}
	for ; k != nil; k, v = c.Next() {
		r := new(store.Repo)
		if err := t.db.dec.Unmarshal(v, r); err != nil {
			return fmt.Errorf("boltstore: repo %s: %w", k, err)
		}
		if more, err := fn(r); err != nil || !more {
			return err
		}
	}
	return nil
}

// decodeRecord decodes a records value into a Record.
func (t *tx) decodeRecord(did, collection, rkey string, v []byte) (*store.Record, error) {
	cid, rev, seq, err := parseRecordValue(v)
	if err != nil {
		return nil, fmt.Errorf("boltstore: record %s/%s/%s: %w", did, collection, rkey, err)
	}
	return &store.Record{DID: did, Collection: collection, RKey: rkey, CID: clone(cid), Rev: string(rev), Seq: seq}, nil
}

func (t *tx) Record(did, collection, rkey string) (*store.Record, error) {
	id, ok, err := t.didID(did, false)
	if err != nil || !ok {
		return nil, errOr(err, store.ErrNotFound)
	}
	t.kRec = appendRecordKey(t.kRec[:0], id, collection, rkey)
	v := t.getRecord(t.kRec)
	if v == nil {
		return nil, store.ErrNotFound
	}
	r, err := t.decodeRecord(did, collection, rkey, v)
	if err != nil {
		return nil, err
	}
	r.Value = t.blockValue(id, r.CID)
	return r, nil
}

// errOr returns err if it is not nil, otherwise def.
func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

func (t *tx) ScanRecords(q store.RecordScan, fn func(r *store.Record) (bool, error)) error {
	id, ok, err := t.didID(q.DID, false)
	if err != nil || !ok {
		return err
	}
	base := appendID(nil, id)
	prefix := base
	if q.Collection != "" {
		prefix = append(append(clone(base), q.Collection...), '/')
	}
	c := t.records.Cursor()
	var k, v []byte
	switch {
	case !q.Reverse:
		start := append(clone(prefix), q.After...)
		k, v = c.Seek(start)
		if q.After != "" && bytes.Equal(k, start) {
			k, v = c.Next()
		}
	case q.After == "":
		if end := prefixEnd(prefix); end != nil {
			if k, _ = c.Seek(end); k != nil {
				k, v = c.Prev()
			} else {
				k, v = c.Last()
			}
		} else {
			k, v = c.Last()
		}
	default:
		if k, _ = c.Seek(append(clone(prefix), q.After...)); k != nil {
			k, v = c.Prev()
		} else {
			k, v = c.Last()
		}
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = step(c, q.Reverse) {
		path := k[len(base):]
		i := bytes.IndexByte(path, '/')
		if i < 0 {
			return fmt.Errorf("boltstore: malformed record key %q", k)
		}
		r, err := t.decodeRecord(q.DID, string(path[:i]), string(path[i+1:]), v)
		if err != nil {
			return err
		}
		if q.WithValues {
			r.Value = t.blockValue(id, r.CID)
		}
		if more, err := fn(r); err != nil || !more {
			return err
		}
	}
	return nil
}

func step(c *bolt.Cursor, reverse bool) ([]byte, []byte) {
	if reverse {
		return c.Prev()
	}
	return c.Next()
}

func (t *tx) ScanCollection(collection string, after uint64, fn func(r *store.Record) (bool, error)) error {
	collID, ok, err := t.collID(collection, false)
	if err != nil || !ok {
		return err
	}
	if t.writable {
		if err := t.flushRun(); err != nil {
			return err
		}
	}
	prefix := appendID(nil, collID)
	limit := uint64(math.MaxUint64) // visit seqs below limit
	start := prefixEnd(prefix)      // after 0: from the newest
	if after != 0 {
		limit = after
		start = appendByCollKey(nil, collID, after)
	}
	inColl := func(k []byte) bool { return len(k) == len(prefix)+8 && bytes.HasPrefix(k, prefix) }
	c := t.byColl.Cursor()
	var k, v []byte
	if start != nil {
		k, v = c.Seek(start)
	}
	// The entry at or after the cursor is a run that may hold seqs below it.
	if k == nil || !inColl(k) || after == 0 || len(v) <= idLen || v[idLen] != 0 {
		if k != nil {
			k, v = c.Prev()
		} else {
			k, v = c.Last()
		}
	}
	for ; k != nil && inColl(k); k, v = c.Prev() {
		e, err := parseByCollValue(v)
		if err != nil {
			return fmt.Errorf("boltstore: collection index entry %x: %w", k, err)
		}
		seq := binary.BigEndian.Uint64(k[len(prefix):])
		if e.n > 0 {
			more, err := t.scanRun(collection, e, seq, limit, fn)
			if err != nil || !more {
				return err
			}
			continue
		}
		did, err := t.didName(e.id)
		if err != nil {
			return err
		}
		rkey := string(e.last)
		t.kRec = appendRecordKey(t.kRec[:0], e.id, collection, rkey)
		rv := t.getRecord(t.kRec)
		if rv == nil {
			return fmt.Errorf("boltstore: collection index names absent record %s/%s/%s", did, collection, rkey)
		}
		r, err := t.decodeRecord(did, collection, rkey, rv)
		if err != nil {
			return err
		}
		r.Value = t.blockValue(e.id, r.CID)
		if more, err := fn(r); err != nil || !more {
			return err
		}
	}
	return nil
}

func (t *tx) CountRecords(did, collection string) (int64, error) {
	id, ok, err := t.didID(did, false)
	if err != nil || !ok {
		return 0, err
	}
	if err := t.flushColls(); err != nil {
		return 0, err
	}
	if collection != "" {
		return int64(getU64(t.colls.Get(appendCollKey(nil, id, collection)))), nil
	}
	prefix := appendID(nil, id)
	var n int64
	c := t.colls.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		n += int64(getU64(v))
	}
	return n, nil
}

func (t *tx) Collections(did string) ([]string, error) {
	id, ok, err := t.didID(did, false)
	if err != nil || !ok {
		return nil, err
	}
	if err := t.flushColls(); err != nil {
		return nil, err
	}
	prefix := appendID(nil, id)
	var out []string
	c := t.colls.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out, nil
}

// lookBlock returns a block as this transaction sees it, without loading
// it into the cache; value aliases the map or the caller's slice.
func (t *tx) lookBlock(id uint32, cid []byte) (refs uint64, value []byte, has bool, err error) {
	if len(cid) == 0 {
		return 0, nil, false, nil
	}
	t.kBlk = appendBlockKey(t.kBlk[:0], id, cid)
	if e, ok := t.blockCache[string(t.kBlk)]; ok {
		return e.n, e.val, e.has, nil
	}
	v := t.getBlock(t.kBlk)
	if v == nil {
		return 0, nil, false, nil
	}
	refs, value, has, err = parseBlockValue(v)
	if err != nil {
		return 0, nil, false, fmt.Errorf("boltstore: block %d %x: %w", id, cid, err)
	}
	return refs, value, has, nil
}

// blockValue returns a copy of a block's value, nil if absent or unreadable.
func (t *tx) blockValue(id uint32, cid []byte) []byte {
	_, v, has, err := t.lookBlock(id, cid)
	if err != nil || !has {
		return nil
	}
	return append(make([]byte, 0, len(v)), v...)
}

func (t *tx) Block(did string, cid []byte) ([]byte, error) {
	id, ok, err := t.didID(did, false)
	if err != nil || !ok {
		return nil, errOr(err, store.ErrNotFound)
	}
	_, v, has, err := t.lookBlock(id, cid)
	if err != nil {
		return nil, err
	}
	if !has {
		return nil, store.ErrNotFound
	}
	return append(make([]byte, 0, len(v)), v...), nil
}

func (t *tx) BlockRefs(did string, cid []byte) (uint64, error) {
	id, ok, err := t.didID(did, false)
	if err != nil || !ok {
		return 0, err
	}
	n, _, _, err := t.lookBlock(id, cid)
	return n, err
}

// decodeEvent decodes an events entry and loads its record value.
func (t *tx) decodeEvent(k, v []byte) (*store.Event, error) {
	ev := new(store.Event)
	id, collID, err := parseEvent(v, ev)
	if err == nil && id != 0 {
		ev.DID, err = t.didName(id)
	}
	if err == nil && collID != 0 {
		ev.Collection, err = t.collDict.name(collID)
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: event %d: %w", binary.BigEndian.Uint64(k), err)
	}
	ev.ID = binary.BigEndian.Uint64(k)
	if len(ev.CID) > 0 {
		ev.Record = t.blockValue(id, ev.CID)
	}
	return ev, nil
}

func (t *tx) Event(id uint64) (*store.Event, error) {
	k := u64(id)
	v := t.events.Get(k)
	if v == nil {
		return nil, store.ErrNotFound
	}
	return t.decodeEvent(k, v)
}

func (t *tx) ScanEvents(after uint64, fn func(ev *store.Event) (bool, error)) error {
	if after == math.MaxUint64 {
		return nil
	}
	c := t.events.Cursor()
	for k, v := c.Seek(u64(after + 1)); k != nil; k, v = c.Next() {
		ev, err := t.decodeEvent(k, v)
		if err != nil {
			return err
		}
		if more, err := fn(ev); err != nil || !more {
			return err
		}
	}
	return nil
}

func (t *tx) EventBounds() (oldest, newest uint64, err error) {
	if k, _ := t.events.Cursor().First(); k != nil {
		oldest = binary.BigEndian.Uint64(k)
	}
	return oldest, t.events.Sequence(), nil
}

func (t *tx) ScanQueue(fn func(did string, due time.Time) (bool, error)) error {
	c := t.queue.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) <= timeKeyLen {
			return fmt.Errorf("boltstore: malformed queue key %q", k)
		}
		if more, err := fn(string(k[timeKeyLen:]), parseTime(k)); err != nil || !more {
			return err
		}
	}
	return nil
}

func (t *tx) ScanBuffer(did string, fn func(c *store.BufferedCommit) (bool, error)) error {
	if did == "" || len(did) > maxField {
		return nil
	}
	prefix := didPrefix(did)
	c := t.buffer.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var bv bufferValue
		if err := t.db.dec.Unmarshal(v, &bv); err != nil {
			return fmt.Errorf("boltstore: buffered commit %s %s: %w", did, k[len(prefix):], err)
		}
		bc := &store.BufferedCommit{DID: did, Rev: string(k[len(prefix):]), Seq: bv.Seq, Source: bv.Source, Data: bv.Data}
		if more, err := fn(bc); err != nil || !more {
			return err
		}
	}
	return nil
}

func (t *tx) Meta(key string) ([]byte, error) {
	if key == "" {
		return nil, store.ErrNotFound
	}
	v := t.meta.Get([]byte(key))
	if v == nil {
		return nil, store.ErrNotFound
	}
	return clone(v), nil
}

func (t *tx) Counts() (store.Counts, error) {
	c := store.Counts{ReposByState: make(map[store.RepoState]int64)}
	c.Repos = t.counter(keyRepos) + t.counts.repos
	c.Records = t.counter(keyRecords) + t.counts.records
	c.Events = t.counter(keyEvents) + t.counts.events
	c.Blocks = t.counter(keyBlocks) + t.counts.blocks
	c.BlockBytes = t.counter(keyBlockBytes) + t.counts.blockBytes
	c.Links = t.counter(keyLinks) + t.counts.links
	cur := t.sys.Cursor()
	for k, v := cur.Seek(keyStatePrefix); k != nil && bytes.HasPrefix(k, keyStatePrefix); k, v = cur.Next() {
		if len(k) == len(keyStatePrefix)+1 {
			if n := int64(getU64(v)); n != 0 {
				c.ReposByState[store.RepoState(k[len(keyStatePrefix)])] = n
			}
		}
	}
	for s, d := range t.counts.states {
		if d != 0 {
			if n := c.ReposByState[store.RepoState(s)] + d; n != 0 {
				c.ReposByState[store.RepoState(s)] = n
			} else {
				delete(c.ReposByState, store.RepoState(s))
			}
		}
	}
	return c, nil
}
