package pgstore_test

import (
	"fmt"
	"testing"

	"github.com/cistern-dev/cistern/store"
)

// BenchmarkPutLinks writes 500 records per transaction, as the backfill
// does, each with the links a like (1) or a reply (3) holds, beside the
// same records without links (fsync off on the test server).
func BenchmarkPutLinks(b *testing.B) {
	const perTx = 500
	reply := func(n int) []store.Link {
		post := fmt.Sprintf("at://did:plc:p%d/app.bsky.feed.post/3kpost", n%1000)
		return []store.Link{{Target: post, Path: "reply.parent.uri"}, {Target: post, Path: "reply.root.uri"},
			{Target: fmt.Sprintf("did:plc:p%d", n%777), Path: "facets[].features[].did"}}
	}
	like := func(n int) []store.Link {
		return []store.Link{{Target: fmt.Sprintf("at://did:plc:p%d/app.bsky.feed.post/3kpost", n%1000), Path: "subject.uri"}}
	}
	for _, bc := range []struct {
		name  string
		links func(n int) []store.Link
	}{{"records only", nil}, {"like 1 link", like}, {"reply 3 links", reply}} {
		b.Run(bc.name, func(b *testing.B) {
			s := openTemp(b)
			n, links := 0, 0
			for b.Loop() {
				err := s.Update(b.Context(), func(tx store.Tx) error {
					for j := range perTx {
						rkey := fmt.Sprintf("3k%08d", n+j)
						v := []byte("a record value of some typical length, around one hundred bytes or so ........ " + rkey)
						cid := append([]byte{1, 0x71, 0x12, 0x20}, []byte(rkey)...)
						r := &store.Record{DID: fmt.Sprintf("did:plc:%d", (n+j)/100), Collection: "app.bsky.feed.like", RKey: rkey, CID: cid, Rev: rkey, Value: v}
						if err := tx.PutRecord(r); err != nil {
							return err
						}
						if bc.links != nil {
							ls := bc.links(n + j)
							if err := tx.PutLinks(r.DID, r.Collection, r.RKey, r.Seq, ls); err != nil {
								return err
							}
							links += len(ls)
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
			b.ReportMetric(float64(links)/b.Elapsed().Seconds(), "links/s")
		})
	}
}

// BenchmarkBacklinks100k reads the links to one target that 100,000
// records (of 25,000 DIDs) hold, each operation in a View of its own: a
// page of 100 newest first, oldest first, and from a cursor in the
// middle; the count; the sources. It logs the bytes the index takes.
func BenchmarkBacklinks100k(b *testing.B) {
	const total, dids, perTx = 100_000, 25_000, 5000
	const target, coll, path = "at://did:plc:hot/app.bsky.feed.post/3kpost", "app.bsky.feed.like", "subject.uri"
	s := openTemp(b)
	before := s.Size()
	for i := 0; i < total; i += perTx {
		err := s.Update(b.Context(), func(tx store.Tx) error {
			for j := i; j < i+perTx; j++ {
				// Only the index: PutLinks does not need the record.
				if err := tx.PutLinks(fmt.Sprintf("did:plc:%d", j%dids), coll, fmt.Sprintf("3k%08d", j), uint64(j+1),
					[]store.Link{{Target: target, Path: path}}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("the index of %d links takes %d bytes per link (tables and indexes, after autovacuum if it ran)", total, (s.Size()-before)/total)
	page := func(q store.BacklinkScan) func(tx store.ReadTx) error {
		return func(tx store.ReadTx) error {
			n := 0
			err := tx.ScanBacklinks(q, func(*store.Backlink) (bool, error) { n++; return n < 100, nil })
			if err == nil && n != 100 {
				err = fmt.Errorf("visited %d, want 100", n)
			}
			return err
		}
	}
	for _, bc := range []struct {
		name string
		fn   func(tx store.ReadTx) error
	}{
		{"ScanBacklinks newest 100", page(store.BacklinkScan{Target: target, Collection: coll, Path: path})},
		{"ScanBacklinks oldest 100", page(store.BacklinkScan{Target: target, Collection: coll, Path: path, Reverse: true})},
		{"ScanBacklinks 100 from the middle", page(store.BacklinkScan{Target: target, Collection: coll, Path: path, After: total / 2})},
		{"CountBacklinks", func(tx store.ReadTx) error {
			n, err := tx.CountBacklinks(target, coll, path)
			if err == nil && n != (store.BacklinkCount{Records: total, DIDs: dids}) {
				err = fmt.Errorf("count %+v", n)
			}
			return err
		}},
		{"ScanLinkSources", func(tx store.ReadTx) error {
			return tx.ScanLinkSources(target, func(string, string, store.BacklinkCount) (bool, error) { return true, nil })
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if err := s.View(b.Context(), bc.fn); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
