package boltstore

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/storetest"
	bolt "go.etcd.io/bbolt"
)

func openInternal(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(path, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func putRecords(t *testing.T, db *DB, did, coll string, from, to int) {
	t.Helper()
	err := db.Update(t.Context(), func(tx store.Tx) error {
		for i := from; i < to; i++ {
			v := fmt.Appendf(nil, "value %d", i)
			cid := append([]byte{1, 0x71, 0x12, 0x20}, v...)
			if err := tx.PutRecord(&store.Record{DID: did, Collection: coll, RKey: fmt.Sprintf("3k%04d", i), CID: cid, Rev: "3k", Value: v}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func byCollEntries(t *testing.T, db *DB) int {
	t.Helper()
	n := 0
	if err := db.bolt.View(func(btx *bolt.Tx) error {
		n = btx.Bucket(bucketByColl).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBackfillWritesOneIndexEntryPerCollection pins the layout: a new repo
// written in key order costs one collection index entry per collection, and
// writes to a repo the store already holds cost one per record.
func TestBackfillWritesOneIndexEntryPerCollection(t *testing.T) {
	db := openInternal(t, filepath.Join(t.TempDir(), "cistern.db"))
	putRecords(t, db, "did:plc:a", "app.x.like", 0, 500)
	putRecords(t, db, "did:plc:a", "app.x.post", 0, 1000) // a later transaction: not new
	if n := byCollEntries(t, db); n != 1+1000 {
		t.Errorf("bycoll holds %d entries, want %d (one run, then one per record)", n, 1+1000)
	}
	var seen int
	if err := db.View(t.Context(), func(tx store.ReadTx) error {
		return tx.ScanCollection("app.x.like", 0, func(r *store.Record) (bool, error) {
			if want := fmt.Sprintf("3k%04d", 499-seen); r.RKey != want {
				return false, fmt.Errorf("record %d is %s, want %s", seen, r.RKey, want)
			}
			seen++
			return true, nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if seen != 500 {
		t.Errorf("ScanCollection visited %d records, want 500", seen)
	}
}

// TestMigrateSchema4And5 opens a version 4 and a version 5 file (a
// collection index of single entries only, a time index entry per rise) as
// the current version, and keeps writing runs beside the old entries.
func TestMigrateSchema4And5(t *testing.T) {
	for _, version := range []uint64{4, 5} {
		t.Run(fmt.Sprint("version ", version), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cistern.db")
			db, err := Open(path, &Options{NoSync: true})
			if err != nil {
				t.Fatal(err)
			}
			putRecords(t, db, "did:plc:old", "app.x.post", 0, 1)
			putRecords(t, db, "did:plc:old", "app.x.post", 1, 10) // singles
			db.Close()
			bdb, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := bdb.Update(func(btx *bolt.Tx) error {
				return btx.Bucket(bucketSys).Put(keySchema, binary.BigEndian.AppendUint64(nil, version))
			}); err != nil {
				t.Fatal(err)
			}
			bdb.Close()

			db = openInternal(t, path)
			if err := db.bolt.View(func(btx *bolt.Tx) error {
				if v := getU64(btx.Bucket(bucketSys).Get(keySchema)); v != SchemaVersion {
					return fmt.Errorf("schema version %d after Open, want %d", v, SchemaVersion)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			putRecords(t, db, "did:plc:new", "app.x.post", 0, 10) // a run
			var got []string
			if err := db.View(t.Context(), func(tx store.ReadTx) error {
				return tx.ScanCollection("app.x.post", 0, func(r *store.Record) (bool, error) {
					got = append(got, r.DID[8:]+"/"+r.RKey)
					return true, nil
				})
			}); err != nil {
				t.Fatal(err)
			}
			if len(got) != 20 || got[0] != "new/3k0009" || got[9] != "new/3k0000" || got[10] != "old/3k0009" || got[19] != "old/3k0000" {
				t.Errorf("ScanCollection after migration = %v", got)
			}
		})
	}
}

// TestConformanceSparseTimeIndex runs the conformance suite with time index
// entries at most every 3 ids, so that EventAtTime reads events between
// entries in every case the suite builds, pruning included.
func TestConformanceSparseTimeIndex(t *testing.T) {
	for _, stride := range []uint64{1, 3} {
		t.Run(fmt.Sprint("stride ", stride), func(t *testing.T) {
			defer func(s uint64) { evTimeStride = s }(evTimeStride)
			evTimeStride = stride
			storetest.Run(t, func(t *testing.T) store.Store {
				return openInternal(t, filepath.Join(t.TempDir(), "cistern.db"))
			})
		})
	}
}
