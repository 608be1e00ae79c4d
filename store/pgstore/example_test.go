package pgstore_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/pgstore"
)

// Open a store on PostgreSQL, write a record with its event, and read
// them back. The tables are created in the "cistern" schema on first use;
// to create them by hand instead, run pgstore.SchemaSQL and open with
// NoCreate.
func Example() {
	ctx := context.Background()
	url := os.Getenv("CISTERN_PG_URL") // e.g. postgres://cistern:secret@db.internal:5432/cistern
	s, err := pgstore.Open(ctx, url, &pgstore.Options{Schema: "cistern"})
	if err != nil {
		log.Fatal(err) // names the URL (password hidden) and the cause
	}
	defer s.Close()

	value := []byte{0xa1, 0x64, 't', 'e', 'x', 't', 0x62, 'h', 'i'} // {"text": "hi"}
	cid := []byte{0x01, 0x71, 0x12, 0x20, 0xaa}                     // the value's CID, in binary
	// One transaction: a record and its event commit together, or not at
	// all. A lost connection makes Update redo fn, so fn touches only tx.
	err = s.Update(ctx, func(tx store.Tx) error {
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
	err = s.View(ctx, func(tx store.ReadTx) error {
		return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			fmt.Printf("event %d: %v %v %s\n", ev.ID, ev.Kind, ev.Action, ev.RKey)
			return true, nil
		})
	})
	if err != nil {
		log.Fatal(err)
	}
}
