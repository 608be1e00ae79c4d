package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
)

// Repo ids. Keys of records, collection counts and blocks, and the values of
// the collection index and of events, name a repo by a 4-byte id instead of
// its DID (32 bytes for did:plc): dids maps a DID to its id and didnames the
// id back. Ids are assigned from the dids bucket's sequence, in the
// transaction that first stores something of the repo, so a failed
// transaction assigns none; they are never reused or deleted. A repo first
// seen later gets a larger id, so the records and blocks of a repo being
// backfilled are appended after those of the repos seen before it.
//
// Each transaction caches the ids it resolves; nothing is cached across
// transactions, so a rolled-back id is never seen again.

// didID returns the id of did. If the DID has none, it is assigned when
// create is set (in a write transaction) and otherwise ok is false.
func (t *tx) didID(did string, create bool) (id uint32, ok bool, err error) {
	if id, ok := t.idOf[did]; ok {
		return id, true, nil
	}
	if did == "" || len(did) > maxField {
		if create {
			return 0, false, fmt.Errorf("boltstore: DID of %d bytes", len(did))
		}
		return 0, false, nil
	}
	t.kDID = append(t.kDID[:0], did...)
	if v := t.dids.Get(t.kDID); v != nil {
		if len(v) != idLen {
			return 0, false, fmt.Errorf("boltstore: repo id of %s: %w", did, errMalformed)
		}
		id = binary.BigEndian.Uint32(v)
	} else {
		if !create {
			return 0, false, nil
		}
		seq, err := t.dids.NextSequence()
		if err != nil {
			return 0, false, err
		}
		if seq > math.MaxUint32 {
			return 0, false, fmt.Errorf("boltstore: out of repo ids")
		}
		id = uint32(seq)
		v := appendID(t.alloc(idLen)[:0], id)
		if err := t.dids.Put(t.kDID, v); err != nil {
			return 0, false, err
		}
		if err := t.names.Put(v, []byte(did)); err != nil {
			return 0, false, err
		}
		if t.fresh == nil {
			t.fresh = make(map[uint32]*freshRepo)
		}
		t.fresh[id] = new(freshRepo)
	}
	t.cacheDID(did, id)
	return id, true, nil
}

// didName returns the DID of a repo id.
func (t *tx) didName(id uint32) (string, error) {
	if did, ok := t.nameOf[id]; ok {
		return did, nil
	}
	t.kID = appendID(t.kID[:0], id)
	v := t.names.Get(t.kID)
	if v == nil {
		return "", fmt.Errorf("boltstore: unknown repo id %d: %w", id, errMalformed)
	}
	did := string(v)
	t.cacheDID(did, id)
	return did, nil
}

func (t *tx) cacheDID(did string, id uint32) {
	if t.idOf == nil {
		t.idOf = make(map[string]uint32)
		t.nameOf = make(map[uint32]string)
	}
	t.idOf[did] = id
	t.nameOf[id] = did
}

// freshRepo is what a transaction knows of a repo whose id it assigned:
// nothing of the repo was stored before, so its blocks are all in the
// transaction's block cache, and a record key greater than every one it put
// for the repo is absent. A backfill of a new repo, which writes its records
// in key order, then costs no read of records or blocks.
type freshRepo struct {
	last []byte // the greatest records key put for the repo
}

// absentRecord reports whether the records key k of the repo id is known to
// be absent without reading records.
func (t *tx) absentRecord(id uint32, k []byte) bool {
	f := t.fresh[id]
	return f != nil && bytes.Compare(k, f.last) > 0
}

// putRecordKey notes that the records key k of the repo id was put.
func (t *tx) putRecordKey(id uint32, k []byte) {
	if f := t.fresh[id]; f != nil && bytes.Compare(k, f.last) > 0 {
		f.last = append(f.last[:0], k...)
	}
}
