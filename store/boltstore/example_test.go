package boltstore_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
)

func Example() {
	dir, err := os.MkdirTemp("", "cistern")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	db, err := boltstore.Open(filepath.Join(dir, "cistern.db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()

	// One transaction: a record and its event commit together, or not at all.
	value := []byte{0xa1, 0x64, 't', 'e', 'x', 't', 0x62, 'h', 'i'} // {"text": "hi"}
	cid := []byte{0x01, 0x71, 0x12, 0x20, 0xaa}                     // the value's CID, in binary
	err = db.Update(ctx, func(tx store.Tx) error {
		r := &store.Record{DID: "did:plc:alice", Collection: "xyz.statusphere.status", RKey: "3kabc",
			CID: cid, Rev: "3kabd", Value: value}
		if err := tx.PutRecord(r); err != nil {
			return err
		}
		return tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: r.DID, Rev: r.Rev,
			Collection: r.Collection, RKey: r.RKey, Action: store.ActionCreate, CID: cid, Record: value})
	})
	if err != nil {
		log.Fatal(err)
	}

	err = db.View(ctx, func(tx store.ReadTx) error {
		r, err := tx.Record("did:plc:alice", "xyz.statusphere.status", "3kabc")
		if err != nil {
			return err
		}
		fmt.Printf("record %s/%s rev %s, %d-byte value\n", r.Collection, r.RKey, r.Rev, len(r.Value))
		return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			fmt.Printf("event %d: %v %v %s\n", ev.ID, ev.Kind, ev.Action, ev.RKey)
			return true, nil
		})
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// record xyz.statusphere.status/3kabc rev 3kabd, 9-byte value
	// event 1: record create 3kabc
}
