package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// Counter keys in the sys bucket.
var (
	keyRepos       = []byte("count/repos")
	keyRecords     = []byte("count/records")
	keyEvents      = []byte("count/events")
	keyBlocks      = []byte("count/blocks")
	keyBlockBytes  = []byte("count/blockbytes")
	keyStatePrefix = []byte("count/state/") // followed by the state byte
)

// countDelta is the change a transaction makes to the counters.
type countDelta struct {
	dirty                                      bool
	repos, records, events, blocks, blockBytes int64
	links                                      int64
	states                                     [256]int64
}

// counter reads a counter as committed before this transaction.
func (t *tx) counter(key []byte) int64 {
	return int64(getU64(t.sys.Get(key)))
}

// addColl changes the record count of a repo's collection by n.
func (t *tx) addColl(id uint32, collection string, n int64) {
	t.kCollCount = appendCollKey(t.kCollCount[:0], id, collection)
	if d, ok := t.collDelta[string(t.kCollCount)]; ok { // no allocation
		*d += n
		return
	}
	if t.collDelta == nil {
		t.collDelta = make(map[string]*int64)
	}
	d := new(int64)
	*d = n
	t.collDelta[string(t.kCollCount)] = d
}

// flushColls writes the collection count changes of this transaction to
// colls; a count that reaches zero is deleted.
func (t *tx) flushColls() error {
	for k, dp := range t.collDelta {
		d := *dp
		if d == 0 {
			continue
		}
		key := []byte(k)
		n := int64(getU64(t.colls.Get(key))) + d
		var err error
		if n > 0 {
			err = t.colls.Put(key, u64(uint64(n)))
		} else {
			if n < 0 {
				t.db.log.Warn("boltstore: collection count went negative; clamped to 0", "key", fmt.Sprintf("%x", key), "value", n)
			}
			err = t.colls.Delete(key)
		}
		if err != nil {
			return fmt.Errorf("boltstore: collection counts: %w", err)
		}
	}
	clear(t.collDelta)
	return nil
}

// flushCounts adds the transaction's counter changes (collection counts,
// block reference counts and the counters in sys) to the store.
func (t *tx) flushCounts() error {
	if err := t.flushColls(); err != nil {
		return err
	}
	if err := t.flushEvTimes(); err != nil {
		return err
	}
	if err := t.flushBlocks(); err != nil {
		return err
	}
	d := &t.counts
	if !d.dirty {
		return nil
	}
	add := func(key []byte, n int64) error {
		if n == 0 {
			return nil
		}
		v := t.counter(key) + n
		if v < 0 {
			t.db.log.Warn("boltstore: counter went negative; clamped to 0", "counter", string(key), "value", v)
			v = 0
		}
		if v == 0 {
			return t.sys.Delete(key)
		}
		return t.sys.Put(key, u64(uint64(v)))
	}
	for _, c := range []struct {
		key []byte
		n   int64
	}{{keyRepos, d.repos}, {keyRecords, d.records}, {keyEvents, d.events}, {keyBlocks, d.blocks}, {keyBlockBytes, d.blockBytes}, {keyLinks, d.links}} {
		if err := add(c.key, c.n); err != nil {
			return fmt.Errorf("boltstore: counters: %w", err)
		}
	}
	for s, n := range d.states {
		if n != 0 {
			if err := add(append(clone(keyStatePrefix), byte(s)), n); err != nil {
				return fmt.Errorf("boltstore: counters: %w", err)
			}
		}
	}
	*d = countDelta{}
	return nil
}

func (t *tx) checkWritable() error {
	if !t.writable {
		return store.ErrReadOnly
	}
	return nil
}

func (t *tx) PutRepo(r *store.Repo) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if err := checkField("repo DID", r.DID); err != nil {
		return err
	}
	key := []byte(r.DID)
	oldHandle := ""
	if old := t.repos.Get(key); old != nil {
		var st repoState
		if err := t.db.dec.Unmarshal(old, &st); err != nil {
			return fmt.Errorf("boltstore: put repo %s: old state: %w", r.DID, err)
		}
		t.counts.states[st.State]--
		oldHandle = st.Handle
	} else {
		t.counts.repos++
	}
	if !strings.EqualFold(oldHandle, r.Handle) {
		if err := t.unindexHandle(oldHandle, r.DID); err != nil {
			return err
		}
		if k := handleKey(r.Handle); k != nil {
			if err := t.handles.Put(k, []byte(r.DID)); err != nil {
				return err
			}
		}
	}
	t.counts.states[r.State]++
	t.counts.dirty = true
	v, err := t.db.enc.Marshal(r)
	if err != nil {
		return fmt.Errorf("boltstore: put repo %s: %w", r.DID, err)
	}
	return t.repos.Put(key, v)
}

// unindexHandle drops handle h from the handle index if it names did (a
// handle moves between accounts: the index keeps the last writer's).
func (t *tx) unindexHandle(h, did string) error {
	k := handleKey(h)
	if k == nil || string(t.handles.Get(k)) != did {
		return nil
	}
	return t.handles.Delete(k)
}

func (t *tx) DeleteRepo(did string) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if did == "" {
		return nil
	}
	key := []byte(did)
	if old := t.repos.Get(key); old != nil {
		var st repoState
		if err := t.db.dec.Unmarshal(old, &st); err != nil {
			return fmt.Errorf("boltstore: delete repo %s: %w", did, err)
		}
		t.counts.states[st.State]--
		t.counts.repos--
		t.counts.dirty = true
		if err := t.unindexHandle(st.Handle, did); err != nil {
			return err
		}
		if err := t.repos.Delete(key); err != nil {
			return err
		}
	}
	if err := t.Dequeue(did); err != nil {
		return err
	}
	return t.DeleteBuffer(did, "")
}

// blockEntry is a block as this transaction sees it.
type blockEntry struct {
	n     uint64 // reference count, with this transaction's changes
	val   []byte // the value when has; aliases the file map or a caller's slice
	has   bool   // the value is stored
	dirty bool   // the entry must be written back
}

// ref returns the transaction's entry for the block (id, cid), loading it
// from blocks the first time. Entries are written back by flushBlocks, so
// that a record and its event taking references to the same block cost one
// read and one write of blocks.
func (t *tx) ref(id uint32, cid []byte) (*blockEntry, error) {
	t.kBlk = appendBlockKey(t.kBlk[:0], id, cid)
	if e, ok := t.blockCache[string(t.kBlk)]; ok {
		return e, nil
	}
	if t.blockCache == nil {
		t.blockCache = make(map[string]*blockEntry)
	}
	e := t.newBlockEntry()
	// A repo new in this transaction has no block but those cached.
	if t.fresh[id] == nil {
		if v := t.getBlock(t.kBlk); v != nil {
			var err error
			if e.n, e.val, e.has, err = parseBlockValue(v); err != nil {
				return nil, fmt.Errorf("boltstore: block %d %x: %w", id, cid, err)
			}
		}
	}
	t.blockCache[string(t.kBlk)] = e
	return e, nil
}

// newBlockEntry returns a zero entry from the transaction's slab: one
// allocation per 256 blocks instead of one per block.
func (t *tx) newBlockEntry() *blockEntry {
	if len(t.blockSlab) == 0 {
		t.blockSlab = make([]blockEntry, 256)
	}
	e := &t.blockSlab[0]
	t.blockSlab = t.blockSlab[1:]
	return e
}

// flushBlocks writes the blocks this transaction changed, in key order:
// bbolt inserts into a sorted slice per page, so writing a repo's new blocks
// in hash order would move the entries already inserted once per block.
func (t *tx) flushBlocks() error {
	keys := make([]string, 0, len(t.blockCache))
	for k, e := range t.blockCache {
		if e.dirty {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		e := t.blockCache[k]
		var err error
		t.kBlk = append(t.kBlk[:0], k...) // bbolt copies the key
		if e.n > 0 {
			v := appendBlockValue(t.alloc(binary.MaxVarintLen64 + len(e.val))[:0], e.n, e.val, e.has)
			err = t.blocks.Put(t.kBlk, v)
		} else {
			err = t.blocks.Delete(t.kBlk)
		}
		if err != nil {
			return fmt.Errorf("boltstore: blocks: %w", err)
		}
		e.dirty = false
	}
	return nil
}

// setValue stores value as the block of e if it has none.
func (t *tx) setValue(e *blockEntry, value []byte) {
	if value == nil || e.has {
		return
	}
	e.val, e.has, e.dirty = value, true, true
	t.counts.blocks++
	t.counts.blockBytes += int64(len(value))
	t.counts.dirty = true
}

// addRef adds one reference to the block (id, cid), storing value as the
// block if it is absent and value is not nil.
func (t *tx) addRef(id uint32, cid, value []byte) error {
	e, err := t.ref(id, cid)
	if err != nil {
		return err
	}
	t.setValue(e, value)
	e.n++
	e.dirty = true
	return nil
}

// dropRef drops one reference to the block (id, cid), deleting the block
// with its last reference.
func (t *tx) dropRef(id uint32, cid []byte) error {
	e, err := t.ref(id, cid)
	if err != nil {
		return err
	}
	e.dirty = true
	if e.n > 1 {
		e.n--
		return nil
	}
	if e.n == 0 {
		t.db.log.Warn("boltstore: dropping a reference to an unreferenced block", "repo", id, "cid", fmt.Sprintf("%x", cid))
	}
	e.n = 0
	if e.has {
		t.counts.blocks--
		t.counts.blockBytes -= int64(len(e.val))
		t.counts.dirty = true
		e.val, e.has = nil, false
	}
	return nil
}

func (t *tx) PutRecord(r *store.Record) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("boltstore: put record: %w", err)
	}
	// Keys hold the fields length-prefixed: bound them.
	if err := checkField("record DID", r.DID); err != nil {
		return err
	}
	if err := checkField("record collection", r.Collection); err != nil {
		return err
	}
	id, _, err := t.didID(r.DID, true)
	if err != nil {
		return fmt.Errorf("boltstore: put record: %w", err)
	}
	collID, _, err := t.collID(r.Collection, true)
	if err != nil {
		return fmt.Errorf("boltstore: put record: %w", err)
	}
	t.kRec = appendRecordKey(t.kRec[:0], id, r.Collection, r.RKey)
	appended := t.absentRecord(id, t.kRec)
	var old []byte
	if !appended {
		old = t.getRecord(t.kRec)
	}
	if old != nil {
		oldCID, _, oldSeq, err := parseRecordValue(old)
		if err != nil {
			return fmt.Errorf("boltstore: put record %s/%s/%s: old value: %w", r.DID, r.Collection, r.RKey, err)
		}
		oldCID = clone(oldCID) // unindexRecord may write to bycoll; keep it
		if err := t.unindexRecord(collID, oldSeq); err != nil {
			return err
		}
		if bytes.Equal(oldCID, r.CID) {
			// Same value: the record keeps its one reference; store the
			// block only if it went missing.
			if r.Value != nil {
				e, err := t.ref(id, r.CID)
				if err != nil {
					return err
				}
				t.setValue(e, r.Value)
			}
		} else {
			if err := t.addRef(id, r.CID, r.Value); err != nil {
				return err
			}
			if err := t.dropRef(id, oldCID); err != nil {
				return err
			}
		}
	} else {
		if err := t.addRef(id, r.CID, r.Value); err != nil {
			return err
		}
		t.addColl(id, r.Collection, 1)
		t.counts.records++
		t.counts.dirty = true
	}
	seq, err := t.byColl.NextSequence()
	if err != nil {
		return err
	}
	if err := t.indexRecord(id, collID, r.RKey, seq, appended); err != nil {
		return err
	}
	rv := appendRecordValue(t.alloc(2*binary.MaxVarintLen64 + len(r.CID) + len(r.Rev))[:0], r.CID, r.Rev, seq)
	if err := t.records.Put(t.kRec, rv); err != nil {
		return err
	}
	t.putRecordKey(id, t.kRec)
	r.Seq = seq
	return nil
}

func (t *tx) DeleteRecord(did, collection, rkey string) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	id, ok, err := t.didID(did, false)
	if err != nil || !ok {
		return err
	}
	t.kRec = appendRecordKey(t.kRec[:0], id, collection, rkey)
	old := t.getRecord(t.kRec)
	if old == nil {
		return nil
	}
	oldCID, _, oldSeq, err := parseRecordValue(old)
	if err != nil {
		return fmt.Errorf("boltstore: delete record %s/%s/%s: %w", did, collection, rkey, err)
	}
	oldCID = clone(oldCID)
	collID, ok, err := t.collID(collection, false)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("boltstore: delete record %s/%s/%s: collection has no id: %w", did, collection, rkey, errMalformed)
	}
	if err := t.unindexRecord(collID, oldSeq); err != nil {
		return err
	}
	t.kRec = appendRecordKey(t.kRec[:0], id, collection, rkey)
	if err := t.records.Delete(t.kRec); err != nil {
		return err
	}
	if err := t.dropRef(id, oldCID); err != nil {
		return err
	}
	if err := t.dropLinks(id, collID, appendRecordKey(nil, id, collection, rkey)); err != nil {
		return err
	}
	t.addColl(id, collection, -1)
	t.counts.records--
	t.counts.dirty = true
	return nil
}

func (t *tx) AppendEvent(ev *store.Event) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	var id uint32
	if ev.DID != "" {
		var err error
		if id, _, err = t.didID(ev.DID, true); err != nil {
			return fmt.Errorf("boltstore: append event: %w", err)
		}
	}
	var collID uint32
	if ev.Collection != "" {
		var err error
		if collID, _, err = t.collID(ev.Collection, true); err != nil {
			return fmt.Errorf("boltstore: append event: %w", err)
		}
	}
	if ev.Kind == store.KindRecord && len(ev.CID) > 0 {
		if id == 0 {
			return fmt.Errorf("boltstore: append event: record event without a DID")
		}
		if err := t.addRef(id, ev.CID, ev.Record); err != nil {
			return err
		}
	}
	v := appendEvent(t.alloc(eventLen(ev))[:0], ev, id, collID)
	seq, err := t.events.NextSequence()
	if err != nil {
		return err
	}
	t.kEv = binary.BigEndian.AppendUint64(t.kEv[:0], seq)
	if err := t.events.Put(t.kEv, v); err != nil {
		return err
	}
	if err := t.indexEventTime(ev.Time, seq); err != nil {
		return err
	}
	ev.ID = seq
	t.counts.events++
	t.counts.dirty = true
	return nil
}

func (t *tx) PruneEvents(through uint64, limit int) (int, error) {
	if err := t.checkWritable(); err != nil {
		return 0, err
	}
	n := 0
	c := t.events.Cursor()
	var times prunedTimes
	for limit <= 0 || n < limit {
		k, v := c.First()
		if k == nil || getU64(k) > through {
			break
		}
		f, err := parseEventFields(v)
		if err != nil {
			return n, fmt.Errorf("boltstore: prune event %d: %w", getU64(k), err)
		}
		if n == 0 {
			times = t.startPrune(getU64(k))
		}
		times.prune(getU64(k), f.sec, f.nsec)
		if store.EventKind(f.kind) == store.KindRecord && len(f.cid) > 0 && f.did != 0 {
			if err := t.dropRef(f.did, clone(f.cid)); err != nil {
				return n, err
			}
		}
		if err := c.Delete(); err != nil {
			return n, err
		}
		n++
	}
	t.counts.events -= int64(n)
	t.counts.dirty = n > 0 || t.counts.dirty
	if n > 0 {
		oldest := t.events.Sequence() + 1
		if k, _ := c.First(); k != nil {
			oldest = getU64(k)
		}
		if err := t.pruneEventTimes(times, oldest); err != nil {
			return n, err
		}
	}
	return n, nil
}

func (t *tx) Enqueue(did string, due time.Time) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if err := checkField("queued DID", did); err != nil {
		return err
	}
	if err := t.Dequeue(did); err != nil {
		return err
	}
	dk := appendTime(make([]byte, 0, timeKeyLen), due)
	if err := t.queue.Put(queueKey(dk, did), nil); err != nil {
		return err
	}
	return t.queueDID.Put([]byte(did), dk)
}

func (t *tx) Dequeue(did string) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if did == "" {
		return nil
	}
	dk := t.queueDID.Get([]byte(did))
	if dk == nil {
		return nil
	}
	if err := t.queue.Delete(queueKey(dk, did)); err != nil {
		return err
	}
	return t.queueDID.Delete([]byte(did))
}

func (t *tx) PutBuffer(c *store.BufferedCommit) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if err := checkField("buffered commit DID", c.DID); err != nil {
		return err
	}
	if c.Rev == "" {
		return fmt.Errorf("boltstore: buffered commit of %s: empty rev", c.DID)
	}
	v, err := t.db.enc.Marshal(bufferValue{Seq: c.Seq, Source: c.Source, Data: c.Data})
	if err != nil {
		return fmt.Errorf("boltstore: put buffered commit: %w", err)
	}
	return t.buffer.Put(bufferKey(c.DID, c.Rev), v)
}

func (t *tx) DeleteBuffer(did, rev string) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if did == "" || len(did) > maxField {
		return nil
	}
	if rev != "" {
		return t.buffer.Delete(bufferKey(did, rev))
	}
	prefix := didPrefix(did)
	c := t.buffer.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) PutMeta(key string, value []byte) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if key == "" {
		return fmt.Errorf("boltstore: put meta: empty key")
	}
	if value == nil {
		value = []byte{} // bbolt reads a nil value back as absent
	}
	return t.meta.Put([]byte(key), value)
}

func (t *tx) DeleteMeta(key string) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if key == "" {
		return nil
	}
	return t.meta.Delete([]byte(key))
}
