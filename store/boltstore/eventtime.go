package boltstore

import (
	"bytes"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The time index (bucket evtimes) maps the running maximum of event times to
// the first event id at which it was reached, at some of the ids where it
// rose:
//
//	evtimes   time (appendTime, 12 bytes)    → event id (8 bytes)
//	sys       "evtimes/max"                  → the running maximum of all
//	                                            event times (12 bytes)
//
// AppendEvent adds an entry when an event's time is later than every time
// before it and at least evTimeStride ids separate it from the previous
// entry (the first such event always gets one), so keys and ids both
// increase, and a writer that stamps strictly increasing times (as
// cistern's does) writes one entry per evTimeStride events instead of one
// per event. EventAtTime seeks the first entry at or after t; the answer
// lies between the entry before it and that one, and is found by reading
// the events in between (at most evTimeStride of them when times rise).
//
// PruneEvents keeps this exact across pruning: it adds the entry for the
// running maximum over the events it prunes, so that the last entry at or
// below the newest pruned id always holds the running maximum there, and
// removes the entries whose events are all pruned (an entry covers the ids
// up to the next entry's) except the newest of them. A time at or before a
// pruned event's thus resolves below the oldest retained id, and the index
// holds at most two entries for pruned history.
//
// Schema 4 indexed every rise; such an index is a valid schema 5 index (its
// maximum, absent from sys, is then its last key).

// evTimeStride is the fewest ids between two entries of the time index (a
// variable for tests).
var evTimeStride uint64 = 64

// keyEvTimeMax is the sys key of the running maximum of event times.
var keyEvTimeMax = []byte("evtimes/max")

// loadEvTimes reads, once per transaction, the running maximum of event
// times and the id of the last index entry.
func (t *tx) loadEvTimes() {
	if t.evLoaded {
		return
	}
	t.evLoaded = true
	k, v := t.evtimes.Cursor().Last()
	if k != nil {
		t.evLastID, t.evHasEntry = getU64(v), true
	}
	if m := t.sys.Get(keyEvTimeMax); len(m) == timeKeyLen {
		t.evMax = append(t.evMax[:0], m...)
	} else if k != nil {
		t.evMax = append(t.evMax[:0], k...)
	}
}

// evTimeMax returns the running maximum of event times as an encoded key,
// or nil when no event was ever appended.
func (t *tx) evTimeMax() []byte {
	t.loadEvTimes()
	if len(t.evMax) == 0 {
		return nil
	}
	return t.evMax
}

// indexEventTime notes that event id has time tm.
func (t *tx) indexEventTime(tm time.Time, id uint64) error {
	t.kTime = appendTime(t.kTime[:0], tm)
	key := t.kTime
	if top := t.evTimeMax(); top != nil && bytes.Compare(key, top) <= 0 {
		return nil
	}
	t.evMax = append(t.evMax[:0], key...)
	t.evMaxDirty = true
	if t.evHasEntry && id-t.evLastID < evTimeStride {
		return nil
	}
	if err := t.evtimes.Put(key, u64(id)); err != nil {
		return err
	}
	t.evLastID, t.evHasEntry = id, true
	return nil
}

// flushEvTimes writes the running maximum if this transaction raised it.
func (t *tx) flushEvTimes() error {
	if !t.evMaxDirty {
		return nil
	}
	t.evMaxDirty = false
	if err := t.sys.Put(keyEvTimeMax, clone(t.evMax)); err != nil {
		return fmt.Errorf("boltstore: time index: %w", err)
	}
	return nil
}

// prunedTimes follows the running maximum of event times over the events
// PruneEvents deletes, from the maximum before the first of them.
type prunedTimes struct {
	max   []byte // encoded time; nil for none yet
	maxID uint64 // the first id at which max was reached
	rose  bool   // an event pruned now raised max
}

// startPrune returns the running maximum at id first-1: the key of the
// last index entry at or below it.
func (t *tx) startPrune(first uint64) prunedTimes {
	var p prunedTimes
	c := t.evtimes.Cursor()
	for k, v := c.First(); k != nil && getU64(v) < first; k, v = c.Next() {
		p.max, p.maxID = clone(k), getU64(v)
	}
	return p
}

// prune notes the time of a pruned event.
func (p *prunedTimes) prune(id uint64, sec int64, nsec uint64) {
	var k [timeKeyLen]byte
	key := appendTime(k[:0], unixTime(sec, nsec))
	if p.max == nil || bytes.Compare(key, p.max) > 0 {
		p.max, p.maxID, p.rose = clone(key), id, true
	}
}

// pruneEventTimes keeps the index exact after events up to oldest-1 were
// pruned (p followed them): it adds the entry of the running maximum over
// them, then removes the entries whose events are all below oldest,
// keeping the newest of them and the last entry.
func (t *tx) pruneEventTimes(p prunedTimes, oldest uint64) error {
	if p.rose {
		if err := t.evtimes.Put(p.max, u64(p.maxID)); err != nil {
			return err
		}
		if !t.evHasEntry || p.maxID > t.evLastID {
			t.evLastID, t.evHasEntry = p.maxID, true
		}
	}
	c := t.evtimes.Cursor()
	var stale [][]byte // entries fully pruned, in order
	k, _ := c.First()
	for k != nil {
		next, nv := c.Next()
		if next == nil || getU64(nv) > oldest {
			break
		}
		stale = append(stale, clone(k))
		k = next
	}
	if len(stale) <= 1 {
		return nil
	}
	for _, k := range stale[:len(stale)-1] {
		if err := t.evtimes.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func (t *tx) EventAtTime(tm time.Time) (uint64, error) {
	var kb [timeKeyLen]byte
	key := appendTime(kb[:0], tm)
	c := t.evtimes.Cursor()
	k, v := c.Seek(key)
	var hi uint64 // the answer is at most hi; 0: no entry at or after tm
	if k != nil {
		if len(v) != 8 {
			return 0, fmt.Errorf("boltstore: malformed time index entry %x", k)
		}
		hi = getU64(v)
		k, v = c.Prev()
	} else {
		if top := t.evTimeMax(); top == nil || bytes.Compare(key, top) > 0 {
			return 0, nil
		}
		k, v = c.Last()
	}
	var lo uint64 // the running maximum at lo is below tm
	if k != nil {
		lo = getU64(v)
	}
	oldest := t.events.Sequence() + 1
	if ek, _ := t.events.Cursor().First(); ek != nil {
		oldest = getU64(ek)
	}
	if hi != 0 && (hi < oldest || hi == lo+1) {
		return hi, nil
	}
	// The running maximum at oldest-1 is that of the last entry at or
	// below it, so it is below tm too: the answer is retained.
	ec := t.events.Cursor()
	for ek, ev := ec.Seek(u64(max(lo+1, oldest))); ek != nil; ek, ev = ec.Next() {
		id := getU64(ek)
		if hi != 0 && id >= hi {
			return hi, nil
		}
		f, err := parseEventFields(ev)
		if err != nil {
			return 0, fmt.Errorf("boltstore: event %d: %w", id, err)
		}
		var eb [timeKeyLen]byte
		if bytes.Compare(appendTime(eb[:0], unixTime(f.sec, f.nsec)), key) >= 0 {
			return id, nil
		}
	}
	return hi, nil
}

// migrateEventTimes builds the time index of a version 3 file from its
// retained events. Events pruned before the migration are unknown: an entry
// for id oldest-1 at the oldest retained event's time stands for them, so
// that a time at or before it resolves below the oldest retained id.
func migrateEventTimes(btx *bolt.Tx) error {
	idx, err := btx.CreateBucket(bucketEvTimes)
	if err != nil {
		return fmt.Errorf("create bucket %q: %w", bucketEvTimes, err)
	}
	idx.FillPercent = fillAppend
	var top []byte
	c := btx.Bucket(bucketEvents).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		f, err := parseEventFields(v)
		if err != nil {
			return fmt.Errorf("event %d: %w", getU64(k), err)
		}
		id := getU64(k)
		key := appendTime(nil, unixTime(f.sec, f.nsec))
		if top == nil && id > 1 {
			id-- // stands for the pruned events before it
		} else if bytes.Compare(key, top) <= 0 {
			continue
		}
		if err := idx.Put(key, u64(id)); err != nil {
			return err
		}
		top = key
	}
	return nil
}
