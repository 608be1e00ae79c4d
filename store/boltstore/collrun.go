package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/cistern-dev/cistern/store"
	bolt "go.etcd.io/bbolt"
)

// The collection index (bucket bycoll) holds two kinds of entries, both
// keyed by collection id | seq:
//
//	single  collection id | seq   → repo id | rkey
//	run     collection id | end   → repo id | 0 | uvarint n | uvarint len(first) | first | last
//
// A single entry names the record written at seq. A run stands for the n
// records of one repo and collection written at the consecutive seqs
// end-n+1 … end, in key order from rkey first to rkey last: a backfill of a
// new repo, which puts its records in MST order, writes one entry per
// collection instead of one per record. (An rkey is never empty and never
// starts with a zero byte, so the forms cannot be confused.)
//
// A run is not changed when one of its records is: ScanCollection walks the
// records of the repo from last down to first and visits those whose seq
// is still in the run's range. A record overwritten since has a new seq
// (and its own single entry); a deleted one is absent. A record inserted
// between first and last later has a seq above the range and is skipped.
// A run whose records are all gone stays in the index and visits nothing.

// collRun is the run a write transaction is building: records put at
// consecutive seqs, each absent before and after the previous in key order
// (see tx.absentRecord), of one repo and collection.
type collRun struct {
	active      bool
	id, collID  uint32
	start, end  uint64 // seqs
	first, last []byte // rkeys
}

// indexRecord adds the record (id, rkey) written at seq to the collection
// index. appended says that the record was absent and sorts after every
// record of the repo put before it in this transaction, so that it may
// extend the run being built.
func (t *tx) indexRecord(id, collID uint32, rkey string, seq uint64, appended bool) error {
	r := &t.run
	if appended && r.active && r.id == id && r.collID == collID && seq == r.end+1 {
		r.end = seq
		r.last = append(r.last[:0], rkey...)
		return nil
	}
	if err := t.flushRun(); err != nil {
		return err
	}
	if appended {
		*r = collRun{active: true, id: id, collID: collID, start: seq, end: seq,
			first: append(r.first[:0], rkey...), last: append(r.last[:0], rkey...)}
		return nil
	}
	return t.putSingle(collID, seq, id, rkey)
}

// putSingle writes a single entry of the collection index.
func (t *tx) putSingle(collID uint32, seq uint64, id uint32, rkey string) error {
	t.kColl = appendByCollKey(t.kColl[:0], collID, seq)
	v := appendByCollValue(t.alloc(idLen + len(rkey))[:0], id, rkey)
	return t.byColl.Put(t.kColl, v)
}

// flushRun writes the run being built, if any: a single entry when it
// holds one record.
func (t *tx) flushRun() error {
	r := &t.run
	if !r.active {
		return nil
	}
	r.active = false
	if r.start == r.end {
		return t.putSingle(r.collID, r.end, r.id, string(r.last))
	}
	t.kColl = appendByCollKey(t.kColl[:0], r.collID, r.end)
	v := t.alloc(idLen + 1 + 2*binary.MaxVarintLen64 + len(r.first) + len(r.last))[:0]
	v = appendID(v, r.id)
	v = append(v, 0)
	v = binary.AppendUvarint(v, r.end-r.start+1)
	v = appendBytes(v, r.first)
	v = append(v, r.last...)
	return t.byColl.Put(t.kColl, v)
}

// unindexRecord removes the record written at seq from the collection
// index: its single entry, if it has one. A record in a run is left there
// (its seq no longer matches once it is overwritten or deleted).
func (t *tx) unindexRecord(collID uint32, seq uint64) error {
	if r := &t.run; r.active && r.collID == collID && seq >= r.start && seq <= r.end {
		if err := t.flushRun(); err != nil {
			return err
		}
	}
	if t.collCur == nil {
		t.collCur = t.byColl.Cursor()
	}
	t.kColl = appendByCollKey(t.kColl[:0], collID, seq)
	k, v := t.collCur.Seek(t.kColl)
	if k == nil || !bytes.Equal(k, t.kColl) {
		return nil // in a run
	}
	e, err := parseByCollValue(v)
	if err != nil {
		return fmt.Errorf("boltstore: collection index entry %x: %w", k, err)
	}
	if e.n > 0 {
		return nil // the last record of a run
	}
	return t.collCur.Delete()
}

// byCollEntry is a decoded collection index value; n is 0 for a single
// entry (rkey in last).
type byCollEntry struct {
	id          uint32
	n           uint64
	first, last []byte
}

// parseByCollValue decodes a collection index value; the rkeys alias v.
func parseByCollValue(v []byte) (byCollEntry, error) {
	var e byCollEntry
	if len(v) <= idLen {
		return e, errMalformed
	}
	e.id = binary.BigEndian.Uint32(v)
	if v[idLen] != 0 {
		e.last = v[idLen:]
		return e, nil
	}
	r := reader{b: v[idLen+1:]}
	e.n = r.uvarint()
	e.first = r.bytes()
	e.last = r.b
	if r.bad || e.n < 2 || len(e.first) == 0 || len(e.last) == 0 {
		return e, errMalformed
	}
	return e, nil
}

// scanRun visits the records of the run e, which ends at seq end, whose
// seq is still in the run and below limit, newest first. It reports
// whether fn asked for more.
func (t *tx) scanRun(collection string, e byCollEntry, end, limit uint64, fn func(r *store.Record) (bool, error)) (bool, error) {
	if e.n > end {
		return false, fmt.Errorf("boltstore: collection index run of %d records ending at %d: %w", e.n, end, errMalformed)
	}
	start := end - e.n + 1
	if start >= limit {
		return true, nil
	}
	did, err := t.didName(e.id)
	if err != nil {
		return false, err
	}
	prefix := append(appendID(nil, e.id), collection...)
	prefix = append(prefix, '/')
	lo := append(bytes.Clone(prefix), e.first...)
	hi := append(bytes.Clone(prefix), e.last...)
	c := t.records.Cursor()
	k, v := seekAtOrBefore(c, hi)
	for ; k != nil && bytes.Compare(k, lo) >= 0; k, v = c.Prev() {
		// Every key between lo and hi starts with prefix.
		cid, rev, seq, err := parseRecordValue(v)
		if err != nil {
			return false, fmt.Errorf("boltstore: record %s/%s/%s: %w", did, collection, k[len(prefix):], err)
		}
		if seq < start || seq > end || seq >= limit {
			continue
		}
		r := &store.Record{DID: did, Collection: collection, RKey: string(k[len(prefix):]), CID: clone(cid), Rev: string(rev), Seq: seq}
		r.Value = t.blockValue(e.id, r.CID)
		if more, err := fn(r); err != nil || !more {
			return false, err
		}
	}
	return true, nil
}

// seekAtOrBefore positions c at the greatest key at or before key.
func seekAtOrBefore(c *bolt.Cursor, key []byte) ([]byte, []byte) {
	k, v := c.Seek(key)
	if k != nil && bytes.Equal(k, key) {
		return k, v
	}
	if k != nil {
		return c.Prev()
	}
	return c.Last()
}
