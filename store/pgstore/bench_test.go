package pgstore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
)

// BenchmarkBackfillBatch writes records with their events, 500 per
// transaction, as the backfill does (fsync off on the test server).
func BenchmarkBackfillBatch(b *testing.B) {
	s := openTemp(b)
	const perTx = 500
	n := 0
	b.ResetTimer()
	for b.Loop() {
		err := s.Update(b.Context(), func(tx store.Tx) error {
			for j := range perTx {
				rkey := fmt.Sprintf("3k%08d", n+j)
				v := []byte("a record value of some typical length, around one hundred bytes or so ........ " + rkey)
				cid := append([]byte{1, 0x71, 0x12, 0x20}, []byte(rkey)...)
				r := &store.Record{DID: fmt.Sprintf("did:plc:%d", (n+j)/1000), Collection: "app.bsky.feed.post", RKey: rkey, CID: cid, Rev: rkey, Value: v}
				if err := tx.PutRecord(r); err != nil {
					return err
				}
				if err := tx.AppendEvent(&store.Event{Kind: store.KindRecord, DID: r.DID, Rev: rkey, Collection: r.Collection,
					RKey: rkey, Action: store.ActionCreate, CID: cid, Record: v, Time: time.Now()}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		n += perTx
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}
