package boltstore_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/store/storetest"
	bolt "go.etcd.io/bbolt"
)

func openTemp(t *testing.T) *boltstore.DB {
	t.Helper()
	db, err := boltstore.Open(filepath.Join(t.TempDir(), "cistern.db"), &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cistern.db")
	db, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := []byte{0xa1, 0x61, 'a', 0x01}
	cid := []byte{1, 0x71, 0x12, 0x20, 9}
	err = db.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.PutRepo(&store.Repo{DID: "did:plc:a", State: store.StateSynced}); err != nil {
			return err
		}
		if err := tx.PutRecord(&store.Record{DID: "did:plc:a", Collection: "a.b", RKey: "c", CID: cid, Value: v}); err != nil {
			return err
		}
		return tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: "did:plc:a", Collection: "a.b", RKey: "c", CID: cid, Record: v})
	})
	if err != nil {
		t.Fatal(err)
	}
	if db.Size() <= 0 {
		t.Errorf("Size() = %d, want > 0", db.Size())
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = boltstore.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(t.Context(), func(tx store.ReadTx) error {
		c, err := tx.Counts()
		if err != nil {
			return err
		}
		want := store.Counts{Repos: 1, ReposByState: map[store.RepoState]int64{store.StateSynced: 1}, Records: 1, Events: 1, Blocks: 1, BlockBytes: int64(len(v))}
		if c.Repos != want.Repos || c.Records != want.Records || c.Events != want.Events || c.Blocks != want.Blocks ||
			c.BlockBytes != want.BlockBytes || c.ReposByState[store.StateSynced] != 1 {
			t.Errorf("Counts after reopen = %+v, want %+v", c, want)
		}
		n, err := tx.BlockRefs("did:plc:a", cid)
		if n != 2 {
			t.Errorf("BlockRefs after reopen = %d, want 2", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSchemaVersionMismatch(t *testing.T) {
	// Version 1 is the layout before blocks were keyed by DID; 7 is a
	// future build's.
	for _, version := range []uint64{1, 7} {
		path := filepath.Join(t.TempDir(), "cistern.db")
		db, err := boltstore.Open(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		// Rewrite the version as another build would.
		bdb, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = bdb.Update(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte("sys")).Put([]byte("schema"), binary.BigEndian.AppendUint64(nil, version))
		})
		bdb.Close()
		if err != nil {
			t.Fatal(err)
		}
		_, err = boltstore.Open(path, nil)
		if !errors.Is(err, store.ErrSchemaVersion) {
			t.Fatalf("Open of a version %d file: error %v, want ErrSchemaVersion", version, err)
		}
		if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("version %d", version)) ||
			!strings.Contains(msg, fmt.Sprintf("version %d", boltstore.SchemaVersion)) {
			t.Errorf("error %q should name both versions (%d and %d)", msg, version, boltstore.SchemaVersion)
		}
	}

	// A bbolt file of some other program is not taken over either.
	other := filepath.Join(t.TempDir(), "other.db")
	bdb, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	bdb.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("widgets")); return err })
	bdb.Close()
	if _, err := boltstore.Open(other, nil); !errors.Is(err, store.ErrSchemaVersion) {
		t.Errorf("Open of a foreign bbolt file: error %v, want ErrSchemaVersion", err)
	}
}

func TestClosed(t *testing.T) {
	db, err := boltstore.Open(filepath.Join(t.TempDir(), "cistern.db"), &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	// Close waits for a running transaction.
	inTx := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		db.View(t.Context(), func(store.ReadTx) error {
			close(inTx)
			time.Sleep(50 * time.Millisecond)
			close(finished)
			return nil
		})
	}()
	<-inTx
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-finished:
	default:
		t.Error("Close returned while a View was running")
	}
	if err := db.View(t.Context(), func(store.ReadTx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("View after Close: %v, want ErrClosed", err)
	}
	if err := db.Update(t.Context(), func(store.Tx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Update after Close: %v, want ErrClosed", err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCanceledContext(t *testing.T) {
	db := openTemp(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ran := false
	if err := db.Update(ctx, func(tx store.Tx) error { ran = true; return nil }); !errors.Is(err, context.Canceled) || ran {
		t.Errorf("Update with a canceled context: err %v, fn ran %v", err, ran)
	}
	if err := db.View(ctx, func(tx store.ReadTx) error { ran = true; return nil }); !errors.Is(err, context.Canceled) || ran {
		t.Errorf("View with a canceled context: err %v, fn ran %v", err, ran)
	}
}

func TestFileLockTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cistern.db")
	db, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	if _, err := boltstore.Open(path, &boltstore.Options{Timeout: 50 * time.Millisecond}); err == nil {
		t.Fatal("second Open of a locked file succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open waited %v for the lock, want about 50ms", d)
	}
}

func TestBadInputIsRefused(t *testing.T) {
	db := openTemp(t)
	long := strings.Repeat("x", 70000)
	cid := []byte{1, 2, 3}
	tests := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"empty DID", func(tx store.Tx) error { return tx.PutRepo(&store.Repo{}) }},
		{"record without CID", func(tx store.Tx) error {
			return tx.PutRecord(&store.Record{DID: "did:plc:a", Collection: "a.b", RKey: "c"})
		}},
		{"record without rkey", func(tx store.Tx) error {
			return tx.PutRecord(&store.Record{DID: "did:plc:a", Collection: "a.b", CID: cid})
		}},
		{"collection with slash", func(tx store.Tx) error {
			return tx.PutRecord(&store.Record{DID: "did:plc:a", Collection: "a/b", RKey: "c", CID: cid})
		}},
		{"overlong DID", func(tx store.Tx) error {
			return tx.PutRecord(&store.Record{DID: long, Collection: "a.b", RKey: "c", CID: cid})
		}},
		{"buffer without rev", func(tx store.Tx) error { return tx.PutBuffer(&store.BufferedCommit{DID: "did:plc:a"}) }},
		{"empty meta key", func(tx store.Tx) error { return tx.PutMeta("", []byte("v")) }},
		{"queue without DID", func(tx store.Tx) error { return tx.Enqueue("", time.Now()) }},
		{"record event without DID", func(tx store.Tx) error {
			return tx.AppendEvent(&store.Event{Kind: store.KindRecord, Collection: "a.b", RKey: "c", Action: store.ActionCreate, CID: cid})
		}},
		{"event with overlong DID", func(tx store.Tx) error {
			return tx.AppendEvent(&store.Event{Kind: store.KindIdentity, DID: long})
		}},
		{"event with overlong collection", func(tx store.Tx) error {
			return tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: "did:plc:a", Collection: long, RKey: "c", Action: store.ActionDelete})
		}},
	}
	for _, tc := range tests {
		if err := db.Update(t.Context(), tc.fn); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	// Reads with such input find nothing, without error.
	err := db.View(t.Context(), func(tx store.ReadTx) error {
		if _, err := tx.Record(long, "a.b", "c"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Record(overlong DID): %v", err)
		}
		n, err := tx.CountRecords(long, "")
		if n != 0 || err != nil {
			t.Errorf("CountRecords(overlong DID) = %d, %v", n, err)
		}
		if _, err := tx.Block(long, cid); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Block(overlong DID): %v", err)
		}
		if n, err := tx.BlockRefs("did:plc:unknown", cid); n != 0 || err != nil {
			t.Errorf("BlockRefs(unknown DID) = %d, %v", n, err)
		}
		if err := tx.ScanCollection(long, 0, func(*store.Record) (bool, error) {
			t.Errorf("ScanCollection(overlong collection) visited a record")
			return true, nil
		}); err != nil {
			t.Errorf("ScanCollection(overlong collection): %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestValuesOutliveClose reads every kind of returned byte slice, closes the
// store (which unmaps the file) and then uses them: a slice still pointing
// into the map would fault.
func TestValuesOutliveClose(t *testing.T) {
	db, err := boltstore.Open(filepath.Join(t.TempDir(), "cistern.db"), &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	// Large enough that no bucket stays inline in its parent page (bbolt
	// copies unaligned inline buckets, which would hide a missing copy).
	v := []byte(strings.Repeat("value bytes ", 500))
	cid := []byte("cid bytes")
	err = db.Update(t.Context(), func(tx store.Tx) error {
		for i := range 100 {
			fv := []byte(fmt.Sprint("filler", i))
			fc := []byte(fmt.Sprint("filler cid", i))
			if err := tx.PutRecord(&store.Record{DID: "did:plc:b", Collection: "a.b", RKey: fmt.Sprint(i), CID: fc, Value: fv}); err != nil {
				return err
			}
			if err := tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: "did:plc:b", CID: fc, Record: fv}); err != nil {
				return err
			}
		}
		if err := tx.PutRecord(&store.Record{DID: "did:plc:a", Collection: "a.b", RKey: "c", CID: cid, Value: v}); err != nil {
			return err
		}
		if err := tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: "did:plc:a", Collection: "a.b", RKey: "c", CID: cid, Record: v}); err != nil {
			return err
		}
		if err := tx.PutBuffer(&store.BufferedCommit{DID: "did:plc:a", Rev: "r", Data: v}); err != nil {
			return err
		}
		return tx.PutMeta("m", v)
	})
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	err = db.View(t.Context(), func(tx store.ReadTx) error {
		r, err := tx.Record("did:plc:a", "a.b", "c")
		if err != nil {
			return err
		}
		got = append(got, r.Value, r.CID)
		if err := tx.ScanRecords(store.RecordScan{DID: "did:plc:a", WithValues: true}, func(r *store.Record) (bool, error) {
			got = append(got, r.Value, r.CID)
			return true, nil
		}); err != nil {
			return err
		}
		if err := tx.ScanCollection("a.b", 0, func(r *store.Record) (bool, error) {
			got = append(got, r.Value, r.CID)
			return false, nil
		}); err != nil {
			return err
		}
		b, err := tx.Block("did:plc:a", cid)
		if err != nil {
			return err
		}
		ev, err := tx.Event(101)
		if err != nil {
			return err
		}
		m, err := tx.Meta("m")
		if err != nil {
			return err
		}
		got = append(got, b, ev.Record, ev.CID, m)
		return tx.ScanBuffer("did:plc:a", func(c *store.BufferedCommit) (bool, error) {
			got = append(got, c.Data)
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for i, b := range got {
		if string(b) != string(v) && string(b) != string(cid) {
			t.Errorf("slice %d = %q after Close", i, b)
		}
	}
}
