package boltstore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	bolt "go.etcd.io/bbolt"
)

// Repo and collection ids. The entries written per record name a repo by a
// 4-byte id instead of its DID (32 bytes for did:plc), and the collection
// index and events name a collection by a 4-byte id instead of its NSID:
// dids and collids map a name to its id, didnames and collnames the id back.
// Ids are assigned from the sequence of dids or collids, in the transaction
// that first stores something under the name, so a failed transaction
// assigns none; they are never reused or deleted. A repo first seen later
// gets a larger id, so the records and blocks of a repo being backfilled are
// appended after those of the repos seen before it. Records keys keep the
// collection name, as records must sort in MST order.
//
// Each transaction caches the ids it resolves; nothing is cached across
// transactions, so a rolled-back id is never seen again.

// dict is one name ↔ id dictionary as a transaction sees it.
type dict struct {
	what       string // "DID" or "collection", for errors
	ids, names *bolt.Bucket
	idOf       map[string]uint32
	nameOf     map[uint32]string
	kName, kID []byte
}

// id returns the id of name. If the name has none, it is assigned when
// create is set (in a write transaction; created is then true) and otherwise
// ok is false. The empty name has no id.
func (d *dict) id(t *tx, name string, create bool) (id uint32, ok, created bool, err error) {
	if id, ok := d.idOf[name]; ok {
		return id, true, false, nil
	}
	if name == "" || len(name) > maxField {
		if create {
			return 0, false, false, fmt.Errorf("boltstore: %s of %d bytes", d.what, len(name))
		}
		return 0, false, false, nil
	}
	d.kName = append(d.kName[:0], name...)
	if v := d.ids.Get(d.kName); v != nil {
		if len(v) != idLen {
			return 0, false, false, fmt.Errorf("boltstore: id of %s %s: %w", d.what, name, errMalformed)
		}
		id = binary.BigEndian.Uint32(v)
	} else {
		if !create {
			return 0, false, false, nil
		}
		seq, err := d.ids.NextSequence()
		if err != nil {
			return 0, false, false, err
		}
		if seq > math.MaxUint32 {
			return 0, false, false, fmt.Errorf("boltstore: out of %s ids", d.what)
		}
		id, created = uint32(seq), true
		v := appendID(t.alloc(idLen)[:0], id)
		if err := d.ids.Put(d.kName, v); err != nil {
			return 0, false, false, err
		}
		if err := d.names.Put(v, []byte(name)); err != nil {
			return 0, false, false, err
		}
	}
	d.cache(name, id)
	return id, true, created, nil
}

// name returns the name of an id.
func (d *dict) name(id uint32) (string, error) {
	if name, ok := d.nameOf[id]; ok {
		return name, nil
	}
	d.kID = appendID(d.kID[:0], id)
	v := d.names.Get(d.kID)
	if v == nil {
		return "", fmt.Errorf("boltstore: unknown %s id %d: %w", d.what, id, errMalformed)
	}
	name := string(v)
	d.cache(name, id)
	return name, nil
}

func (d *dict) cache(name string, id uint32) {
	if d.idOf == nil {
		d.idOf = make(map[string]uint32)
		d.nameOf = make(map[uint32]string)
	}
	d.idOf[name] = id
	d.nameOf[id] = name
}

// didID returns the id of a repo. If the DID has none, it is assigned when
// create is set (in a write transaction) and otherwise ok is false.
func (t *tx) didID(did string, create bool) (id uint32, ok bool, err error) {
	id, ok, created, err := t.repoDict.id(t, did, create)
	if created {
		if t.fresh == nil {
			t.fresh = make(map[uint32]*freshRepo)
		}
		t.fresh[id] = new(freshRepo)
	}
	return id, ok, err
}

// didName returns the DID of a repo id.
func (t *tx) didName(id uint32) (string, error) { return t.repoDict.name(id) }

// collID returns the id of a collection, as didID.
func (t *tx) collID(collection string, create bool) (id uint32, ok bool, err error) {
	id, ok, _, err = t.collDict.id(t, collection, create)
	return id, ok, err
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
