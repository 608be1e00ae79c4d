package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The time index (bucket evtimes) maps the running maximum of event times to
// the first event id at which it was reached:
//
//	evtimes   time (appendTime, 12 bytes)    → event id (8 bytes)
//
// AppendEvent adds an entry only when an event's time is later than every
// time before it, so keys and ids both increase, and when times are
// non-decreasing in id order (as cistern's writer stamps them) each entry
// names the first event of its time. EventAtTime is then one Seek.
//
// PruneEvents removes the entries whose events are all pruned (an entry
// covers the ids up to the next entry's), but keeps the newest such entry,
// so that a time at or before a pruned event's still resolves below the
// oldest retained id, and the newest entry of all, which holds the running
// maximum. The index thus holds at most two entries for pruned history.

// evTimeMax returns the running maximum of event times as an encoded key,
// or nil when no event was ever indexed. It is read once per transaction.
func (t *tx) evTimeMax() []byte {
	if !t.evMaxLoaded {
		if k, _ := t.evtimes.Cursor().Last(); k != nil {
			t.evMax = append(t.evMax[:0], k...)
		}
		t.evMaxLoaded = true
	}
	if len(t.evMax) == 0 {
		return nil
	}
	return t.evMax
}

// indexEventTime records that event id has time tm, when tm raises the
// running maximum.
func (t *tx) indexEventTime(tm time.Time, id uint64) error {
	var k [timeKeyLen]byte
	key := appendTime(k[:0], tm)
	if top := t.evTimeMax(); top != nil && bytes.Compare(key, top) <= 0 {
		return nil
	}
	if err := t.evtimes.Put(key, u64(id)); err != nil {
		return err
	}
	t.evMax = append(t.evMax[:0], key...)
	return nil
}

// pruneEventTimes removes the index entries whose events are all below
// oldest (the oldest retained id, or newest+1 when none is), keeping the
// newest of them and the last entry.
func (t *tx) pruneEventTimes(oldest uint64) error {
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
	var k [timeKeyLen]byte
	key, v := t.evtimes.Cursor().Seek(appendTime(k[:0], tm))
	if key == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("boltstore: malformed time index entry %x", key)
	}
	return binary.BigEndian.Uint64(v), nil
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
