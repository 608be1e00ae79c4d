package boltstore_test

import (
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
)

func appendTimes(t *testing.T, db *boltstore.DB, secs ...int64) {
	t.Helper()
	err := db.Update(t.Context(), func(tx store.Tx) error {
		for _, s := range secs {
			if err := tx.AppendEvent(&store.Event{Kind: store.KindIdentity, DID: "did:plc:t", Time: time.Unix(s, 0)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func eventAt(t *testing.T, db *boltstore.DB, sec int64) uint64 {
	t.Helper()
	var id uint64
	if err := db.View(t.Context(), func(tx store.ReadTx) (err error) {
		id, err = tx.EventAtTime(time.Unix(sec, 0))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

// indexEntries counts the entries of the time index.
func indexEntries(t *testing.T, path string) int {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	n := 0
	bdb.View(func(tx *bolt.Tx) error {
		n = tx.Bucket([]byte("evtimes")).Stats().KeyN
		return nil
	})
	return n
}

// TestEventTimeIndexPrunedWithEvents checks that the index does not grow
// with pruned history: it keeps one entry per rise of the running maximum
// among retained events, plus at most two for what was pruned.
func TestEventTimeIndexPrunedWithEvents(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cistern.db")
	db, err := boltstore.Open(path, &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	sec := int64(1000)
	for round := 0; round < 20; round++ {
		var secs []int64
		for i := 0; i < 50; i++ {
			sec++
			secs = append(secs, sec, sec) // two events per time: one entry
		}
		appendTimes(t, db, secs...)
		var newest uint64
		db.View(t.Context(), func(tx store.ReadTx) (err error) { _, newest, err = tx.EventBounds(); return err })
		if err := db.Update(t.Context(), func(tx store.Tx) error {
			_, err := tx.PruneEvents(newest-20, 0) // keep the last 20 events (10 times)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	if n := indexEntries(t, path); n > 10+2 {
		t.Errorf("time index holds %d entries for 10 retained times, want at most 12", n)
	}
}

// TestMigrateSchema3 opens a version 3 file (no time index) and finds its
// events by time.
func TestMigrateSchema3(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cistern.db")
	db, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendTimes(t, db, 10, 20, 20, 30, 25, 40)
	if err := db.Update(t.Context(), func(tx store.Tx) error { _, err := tx.PruneEvents(2, 0); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// Make it a version 3 file, as the build before the index wrote it.
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte("evtimes")); err != nil {
			return err
		}
		return tx.Bucket([]byte("sys")).Put([]byte("schema"), binary.BigEndian.AppendUint64(nil, 3))
	})
	bdb.Close()
	if err != nil {
		t.Fatal(err)
	}

	db, err = boltstore.Open(path, nil)
	if err != nil {
		t.Fatalf("Open of a version 3 file: %v", err)
	}
	defer db.Close()
	// Retained: 3 (20), 4 (30), 5 (25), 6 (40). Times at or before the
	// oldest retained event's resolve below it: what was pruned is unknown.
	for _, tc := range []struct {
		sec  int64
		want uint64
	}{{5, 2}, {20, 2}, {21, 4}, {30, 4}, {31, 6}, {41, 0}} {
		if got := eventAt(t, db, tc.sec); got != tc.want {
			t.Errorf("after migration: EventAtTime(%d) = %d, want %d", tc.sec, got, tc.want)
		}
	}
	appendTimes(t, db, 50)
	if got := eventAt(t, db, 45); got != 7 {
		t.Errorf("EventAtTime(45) after a new event = %d, want 7", got)
	}
}

// TestEventTimeIndexIsSparse checks that rising times, as cistern's writer
// stamps them, cost one index entry per 64 events, not one per event.
func TestEventTimeIndexIsSparse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cistern.db")
	db, err := boltstore.Open(path, &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var secs []int64
	for i := range 1000 {
		secs = append(secs, int64(1000+i))
	}
	appendTimes(t, db, secs...)
	for _, sec := range []int64{999, 1000, 1001, 1063, 1064, 1065, 1500, 1999} {
		want := uint64(max(sec-999, 1))
		if got := eventAt(t, db, sec); got != want {
			t.Errorf("EventAtTime(%d) = %d, want %d", sec, got, want)
		}
	}
	if got := eventAt(t, db, 2000); got != 0 {
		t.Errorf("EventAtTime(2000) = %d, want 0", got)
	}
	db.Close()
	if n := indexEntries(t, path); n > 1000/64+1 {
		t.Errorf("time index holds %d entries for 1000 rising times, want at most %d", n, 1000/64+1)
	}
}
