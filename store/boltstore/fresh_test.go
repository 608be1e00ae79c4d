package boltstore_test

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
)

// TestFreshRepoShortcut checks that a repo first seen in a transaction (whose
// records and blocks the store does not read back) ends in the same state as
// a repo already known, for writes out of key order, replacements, deletes
// and events inside that one transaction.
func TestFreshRepoShortcut(t *testing.T) {
	const did, coll = "did:plc:fresh", "app.bsky.feed.post"
	val := func(s string) ([]byte, []byte) {
		v := []byte("value " + s)
		sum := sha256.Sum256(v)
		return append([]byte{1, 0x71, 0x12, 0x20}, sum[:]...), v
	}
	put := func(rkey, value string) func(tx store.Tx) error {
		return func(tx store.Tx) error {
			cid, v := val(value)
			if err := tx.PutRecord(&store.Record{DID: did, Collection: coll, RKey: rkey, CID: cid, Rev: "3k" + value, Value: v}); err != nil {
				return err
			}
			return tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: did, Collection: coll, RKey: rkey,
				Action: store.ActionCreate, CID: cid, Record: v, Time: time.Unix(1, 0)})
		}
	}
	del := func(rkey string) func(tx store.Tx) error {
		return func(tx store.Tx) error { return tx.DeleteRecord(did, coll, rkey) }
	}
	tests := []struct {
		name string
		ops  []func(tx store.Tx) error
	}{
		{"in order", []func(tx store.Tx) error{put("a", "1"), put("b", "2"), put("c", "3")}},
		{"out of order", []func(tx store.Tx) error{put("c", "1"), put("a", "2"), put("b", "3")}},
		{"replaced", []func(tx store.Tx) error{put("a", "1"), put("b", "2"), put("a", "3"), put("b", "2")}},
		{"same value twice", []func(tx store.Tx) error{put("a", "1"), put("b", "1"), put("c", "1")}},
		{"deleted and put again", []func(tx store.Tx) error{put("a", "1"), put("b", "2"), del("a"), put("a", "1"), del("b"), del("b")}},
	}
	dump := func(t *testing.T, db *boltstore.DB) string {
		var b strings.Builder
		err := db.View(t.Context(), func(tx store.ReadTx) error {
			refs := map[string]bool{}
			if err := tx.ScanRecords(store.RecordScan{DID: did, WithValues: true}, func(r *store.Record) (bool, error) {
				fmt.Fprintf(&b, "record %s %x %s %q\n", r.RKey, r.CID, r.Rev, r.Value)
				refs[string(r.CID)] = true
				return true, nil
			}); err != nil {
				return err
			}
			if err := tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
				if ev.DID == did && ev.Kind == store.KindRecord {
					fmt.Fprintf(&b, "event %s %x %q\n", ev.RKey, ev.CID, ev.Record)
					refs[string(ev.CID)] = true
				}
				return true, nil
			}); err != nil {
				return err
			}
			for _, v := range []string{"1", "2", "3"} {
				cid, _ := val(v)
				n, err := tx.BlockRefs(did, cid)
				if err != nil {
					return err
				}
				blk, _ := tx.Block(did, cid)
				fmt.Fprintf(&b, "block %s refs %d value %q\n", v, n, blk)
			}
			n, err := tx.CountRecords(did, coll)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "count %d\n", n)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	run := func(t *testing.T, known bool, ops []func(tx store.Tx) error) string {
		db, err := boltstore.Open(filepath.Join(t.TempDir(), "db"), &boltstore.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if known {
			// An event gives the repo its id in an earlier transaction.
			if err := db.Update(t.Context(), func(tx store.Tx) error {
				return tx.AppendEvent(&store.Event{Kind: store.KindIdentity, DID: did, Handle: "h.test"})
			}); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Update(t.Context(), func(tx store.Tx) error {
			for _, op := range ops {
				if err := op(tx); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return dump(t, db)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fresh, known := run(t, false, tc.ops), run(t, true, tc.ops)
			if fresh != known {
				t.Errorf("new repo:\n%s\nknown repo:\n%s", fresh, known)
			}
			if !strings.Contains(fresh, "record ") {
				t.Errorf("no record stored:\n%s", fresh)
			}
		})
	}
}
