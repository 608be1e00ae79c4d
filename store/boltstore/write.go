package boltstore

import (
	"bytes"
	"fmt"
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
	states                                     [256]int64
}

// counter reads a counter as committed before this transaction.
func (t *tx) counter(key []byte) int64 {
	return int64(getU64(t.sys.Get(key)))
}

// addColl changes the record count of a repo's collection by n.
func (t *tx) addColl(key []byte, n int64) {
	if t.collDelta == nil {
		t.collDelta = make(map[string]int64)
	}
	t.collDelta[string(key)] += n
}

// flushColls writes the collection count changes of this transaction to
// colls; a count that reaches zero is deleted.
func (t *tx) flushColls() error {
	for k, d := range t.collDelta {
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
	if err := t.flushRefs(); err != nil {
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
	}{{keyRepos, d.repos}, {keyRecords, d.records}, {keyEvents, d.events}, {keyBlocks, d.blocks}, {keyBlockBytes, d.blockBytes}} {
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
	if old := t.repos.Get(key); old != nil {
		var st repoState
		if err := t.db.dec.Unmarshal(old, &st); err != nil {
			return fmt.Errorf("boltstore: put repo %s: old state: %w", r.DID, err)
		}
		t.counts.states[st.State]--
	} else {
		t.counts.repos++
	}
	t.counts.states[r.State]++
	t.counts.dirty = true
	v, err := t.db.enc.Marshal(r)
	if err != nil {
		return fmt.Errorf("boltstore: put repo %s: %w", r.DID, err)
	}
	return t.repos.Put(key, v)
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
		if err := t.repos.Delete(key); err != nil {
			return err
		}
	}
	if err := t.Dequeue(did); err != nil {
		return err
	}
	return t.DeleteBuffer(did, "")
}

// refEntry is a block's reference count as this transaction sees it.
type refEntry struct {
	n     uint64 // the count, with this transaction's changes
	dirty bool   // n must be written back
	block bool   // the block is known to be stored
}

// ref returns the transaction's entry for the block cid, loading its count
// from refs the first time. Counts are written back by flushRefs, so that a
// record and its event taking references to the same block cost one read
// and one write of refs, and no read of blocks.
func (t *tx) ref(cid []byte) *refEntry {
	if e, ok := t.refCache[string(cid)]; ok {
		return e
	}
	if t.refCache == nil {
		t.refCache = make(map[string]*refEntry)
	}
	e := &refEntry{n: getU64(t.refs.Get(cid))}
	t.refCache[string(cid)] = e
	return e
}

// flushRefs writes the reference counts this transaction changed.
func (t *tx) flushRefs() error {
	for k, e := range t.refCache {
		if !e.dirty {
			continue
		}
		var err error
		if e.n > 0 {
			err = t.refs.Put([]byte(k), u64(e.n))
		} else {
			err = t.refs.Delete([]byte(k))
		}
		if err != nil {
			return fmt.Errorf("boltstore: reference counts: %w", err)
		}
		e.dirty = false
	}
	return nil
}

// addRef adds one reference to the block cid, storing value as the block if
// it is absent and value is not nil.
func (t *tx) addRef(cid, value []byte) error {
	e := t.ref(cid)
	if value != nil && !e.block {
		if e.n == 0 || t.blocks.Get(cid) == nil {
			if err := t.blocks.Put(cid, value); err != nil {
				return fmt.Errorf("boltstore: put block: %w", err)
			}
			t.counts.blocks++
			t.counts.blockBytes += int64(len(value))
			t.counts.dirty = true
		}
		e.block = true
	}
	e.n++
	e.dirty = true
	return nil
}

// dropRef drops one reference to the block cid, deleting the block with its
// last reference.
func (t *tx) dropRef(cid []byte) error {
	e := t.ref(cid)
	if e.n > 1 {
		e.n--
		e.dirty = true
		return nil
	}
	if e.n == 0 {
		t.db.log.Warn("boltstore: dropping a reference to an unreferenced block", "cid", fmt.Sprintf("%x", cid))
	} else {
		e.n = 0
		e.dirty = true
	}
	e.block = false
	if v := t.blocks.Get(cid); v != nil {
		t.counts.blocks--
		t.counts.blockBytes -= int64(len(v))
		t.counts.dirty = true
		return t.blocks.Delete(cid)
	}
	return nil
}

func (t *tx) PutRecord(r *store.Record) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if err := checkField("record DID", r.DID); err != nil {
		return err
	}
	if err := checkField("record collection", r.Collection); err != nil {
		return err
	}
	if strings.IndexByte(r.Collection, '/') >= 0 {
		return fmt.Errorf("boltstore: collection %q contains '/'", r.Collection)
	}
	if r.RKey == "" {
		return fmt.Errorf("boltstore: put record %s/%s: empty rkey", r.DID, r.Collection)
	}
	if len(r.CID) == 0 {
		return fmt.Errorf("boltstore: put record %s/%s/%s: empty CID", r.DID, r.Collection, r.RKey)
	}
	key := recordKey(r.DID, r.Collection, r.RKey)
	if old := t.records.Get(key); old != nil {
		var ov recordValue
		if err := t.db.dec.Unmarshal(old, &ov); err != nil {
			return fmt.Errorf("boltstore: put record %s/%s/%s: old value: %w", r.DID, r.Collection, r.RKey, err)
		}
		if err := t.byColl.Delete(byCollKey(r.Collection, ov.Seq)); err != nil {
			return err
		}
		if bytes.Equal(ov.CID, r.CID) {
			// Same value: the record keeps its one reference; store the
			// block only if it went missing.
			if r.Value != nil && t.blocks.Get(r.CID) == nil {
				if err := t.blocks.Put(r.CID, r.Value); err != nil {
					return err
				}
				t.counts.blocks++
				t.counts.blockBytes += int64(len(r.Value))
				t.counts.dirty = true
			}
		} else {
			if err := t.addRef(r.CID, r.Value); err != nil {
				return err
			}
			if err := t.dropRef(ov.CID); err != nil {
				return err
			}
		}
	} else {
		if err := t.addRef(r.CID, r.Value); err != nil {
			return err
		}
		t.addColl(collKey(r.DID, r.Collection), 1)
		t.counts.records++
		t.counts.dirty = true
	}
	seq, err := t.byColl.NextSequence()
	if err != nil {
		return err
	}
	v, err := t.db.enc.Marshal(recordValue{CID: r.CID, Rev: r.Rev, Seq: seq})
	if err != nil {
		return fmt.Errorf("boltstore: put record: %w", err)
	}
	if err := t.byColl.Put(byCollKey(r.Collection, seq), byCollValue(r.DID, r.RKey)); err != nil {
		return err
	}
	if err := t.records.Put(key, v); err != nil {
		return err
	}
	r.Seq = seq
	return nil
}

func (t *tx) DeleteRecord(did, collection, rkey string) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	if len(did) > maxField {
		return nil
	}
	key := recordKey(did, collection, rkey)
	old := t.records.Get(key)
	if old == nil {
		return nil
	}
	var ov recordValue
	if err := t.db.dec.Unmarshal(old, &ov); err != nil {
		return fmt.Errorf("boltstore: delete record %s/%s/%s: %w", did, collection, rkey, err)
	}
	if err := t.byColl.Delete(byCollKey(collection, ov.Seq)); err != nil {
		return err
	}
	if err := t.dropRef(ov.CID); err != nil {
		return err
	}
	if err := t.records.Delete(key); err != nil {
		return err
	}
	t.addColl(collKey(did, collection), -1)
	t.counts.records--
	t.counts.dirty = true
	return nil
}

func (t *tx) AppendEvent(ev *store.Event) error {
	if err := t.checkWritable(); err != nil {
		return err
	}
	v, err := t.db.enc.Marshal(ev)
	if err != nil {
		return fmt.Errorf("boltstore: append event: %w", err)
	}
	if ev.Kind == store.KindRecord && len(ev.CID) > 0 {
		if err := t.addRef(ev.CID, ev.Record); err != nil {
			return err
		}
	}
	id, err := t.events.NextSequence()
	if err != nil {
		return err
	}
	if err := t.events.Put(u64(id), v); err != nil {
		return err
	}
	ev.ID = id
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
	for limit <= 0 || n < limit {
		k, v := c.First()
		if k == nil || getU64(k) > through {
			break
		}
		var ref eventRef
		if err := t.db.dec.Unmarshal(v, &ref); err != nil {
			return n, fmt.Errorf("boltstore: prune event %d: %w", getU64(k), err)
		}
		if store.EventKind(ref.Kind) == store.KindRecord && len(ref.CID) > 0 {
			if err := t.dropRef(ref.CID); err != nil {
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
