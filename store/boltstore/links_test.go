package boltstore_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	bolt "go.etcd.io/bbolt"
)

const (
	linkPost = "at://did:plc:target/app.bsky.feed.post/3kpost"
	linkDID  = "did:plc:target"
	like     = "app.bsky.feed.like"
)

// putLinked puts a record and its links in one transaction, as the writer
// does, and returns its seq.
func putLinked(t *testing.T, db *boltstore.DB, did, coll, rkey string, links ...store.Link) uint64 {
	t.Helper()
	r := &store.Record{DID: did, Collection: coll, RKey: rkey, CID: []byte("cid-" + rkey), Rev: "3k2", Value: []byte{0xa0}}
	err := db.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.PutRecord(r); err != nil {
			return err
		}
		return tx.PutLinks(did, coll, rkey, r.Seq, links)
	})
	if err != nil {
		t.Fatal(err)
	}
	return r.Seq
}

func scanLinks(t *testing.T, db *boltstore.DB, q store.BacklinkScan, limit int) []string {
	t.Helper()
	var got []string
	err := db.View(t.Context(), func(tx store.ReadTx) error {
		return tx.ScanBacklinks(q, func(b *store.Backlink) (bool, error) {
			got = append(got, fmt.Sprintf("%s/%s/%s@%s#%d", b.DID, b.Collection, b.RKey, b.Path, b.Seq))
			return limit <= 0 || len(got) < limit, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func countLinks(t *testing.T, db *boltstore.DB, target, coll, path string) (store.BacklinkCount, int64) {
	t.Helper()
	var n store.BacklinkCount
	var total int64
	err := db.View(t.Context(), func(tx store.ReadTx) error {
		var err error
		if n, err = tx.CountBacklinks(target, coll, path); err != nil {
			return err
		}
		c, err := tx.Counts()
		total = c.Links
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n, total
}

func TestBacklinks_ScanNewestFirstPagedAndCounted(t *testing.T) {
	db := openTemp(t)
	l := store.Link{Target: linkPost, Path: "subject.uri"}
	s1 := putLinked(t, db, "did:plc:a", like, "1", l)
	s2 := putLinked(t, db, "did:plc:b", like, "2", l)
	s3 := putLinked(t, db, "did:plc:a", like, "3", l, l) // a second like of a; the duplicate is stored once
	putLinked(t, db, "did:plc:c", "app.bsky.feed.repost", "1", l)
	putLinked(t, db, "did:plc:c", like, "9", store.Link{Target: linkPost + "x", Path: "subject.uri"})

	q := store.BacklinkScan{Target: linkPost, Collection: like, Path: "subject.uri"}
	want := []string{
		fmt.Sprintf("did:plc:a/%s/3@subject.uri#%d", like, s3),
		fmt.Sprintf("did:plc:b/%s/2@subject.uri#%d", like, s2),
		fmt.Sprintf("did:plc:a/%s/1@subject.uri#%d", like, s1),
	}
	if got := scanLinks(t, db, q, 0); !slices.Equal(got, want) {
		t.Fatalf("newest first:\n got %v\nwant %v", got, want)
	}
	q.After = s3
	if got := scanLinks(t, db, q, 0); !slices.Equal(got, want[1:]) {
		t.Fatalf("after %d: got %v, want %v", s3, got, want[1:])
	}
	q.After, q.Reverse = 0, true
	if got := scanLinks(t, db, q, 0); !slices.Equal(got, []string{want[2], want[1], want[0]}) {
		t.Fatalf("oldest first: got %v", got)
	}
	q.After = s1
	if got := scanLinks(t, db, q, 1); !slices.Equal(got, want[1:2]) {
		t.Fatalf("oldest first after %d, limit 1: got %v", s1, got)
	}
	for _, q := range []store.BacklinkScan{
		{Target: linkPost, Collection: like, Path: "subject"},
		{Target: linkPost, Collection: "app.bsky.feed.unknown", Path: "subject.uri"},
		{Target: "at://nothing", Collection: like, Path: "subject.uri"},
	} {
		if got := scanLinks(t, db, q, 0); len(got) != 0 {
			t.Errorf("%+v: got %v, want nothing", q, got)
		}
	}
	n, total := countLinks(t, db, linkPost, like, "subject.uri")
	if n != (store.BacklinkCount{Records: 3, DIDs: 2}) || total != 5 {
		t.Fatalf("count = %+v, total %d; want 3 records of 2 DIDs, 5 links", n, total)
	}

	var sources []string
	err := db.View(t.Context(), func(tx store.ReadTx) error {
		return tx.ScanLinkSources(linkPost, func(coll, path string, n store.BacklinkCount) (bool, error) {
			sources = append(sources, fmt.Sprintf("%s:%s=%d/%d", coll, path, n.Records, n.DIDs))
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{like + ":subject.uri=3/2", "app.bsky.feed.repost:subject.uri=1/1"}; !slices.Equal(sources, want) {
		t.Fatalf("sources = %v", sources)
	}
}

func TestBacklinks_UpdateAndDeleteRemoveOldLinks(t *testing.T) {
	db := openTemp(t)
	follow := "app.bsky.graph.follow"
	putLinked(t, db, "did:plc:a", follow, "1", store.Link{Target: linkDID, Path: "subject"})
	putLinked(t, db, "did:plc:b", follow, "1", store.Link{Target: linkDID, Path: "subject"})
	// a's follow now points elsewhere: the old link goes.
	putLinked(t, db, "did:plc:a", follow, "1", store.Link{Target: "did:plc:other", Path: "subject"})
	if n, total := countLinks(t, db, linkDID, follow, "subject"); n != (store.BacklinkCount{Records: 1, DIDs: 1}) || total != 2 {
		t.Fatalf("after update: %+v, total %d", n, total)
	}
	if got := scanLinks(t, db, store.BacklinkScan{Target: linkDID, Collection: follow, Path: "subject"}, 0); len(got) != 1 {
		t.Fatalf("after update: %v", got)
	}
	// A record put without PutLinks keeps what PutLinks last stored for
	// it; DeleteRecord removes that.
	if err := db.Update(t.Context(), func(tx store.Tx) error { return tx.DeleteRecord("did:plc:b", follow, "1") }); err != nil {
		t.Fatal(err)
	}
	if n, total := countLinks(t, db, linkDID, follow, "subject"); n != (store.BacklinkCount{}) || total != 1 {
		t.Fatalf("after delete: %+v, total %d", n, total)
	}
	// PutLinks with no links removes them.
	seq := putLinked(t, db, "did:plc:a", follow, "1", store.Link{Target: "did:plc:other", Path: "subject"})
	if err := db.Update(t.Context(), func(tx store.Tx) error { return tx.PutLinks("did:plc:a", follow, "1", seq, nil) }); err != nil {
		t.Fatal(err)
	}
	if _, total := countLinks(t, db, "did:plc:other", follow, "subject"); total != 0 {
		t.Fatalf("after PutLinks(nil): %d links", total)
	}
}

func TestBacklinks_BadInput(t *testing.T) {
	db := openTemp(t)
	long := make([]byte, 20<<10)
	for i := range long {
		long[i] = 'a'
	}
	for _, l := range []store.Link{{Target: "", Path: "subject"}, {Target: "did:plc:" + string(long), Path: "subject"}} {
		err := db.Update(t.Context(), func(tx store.Tx) error { return tx.PutLinks("did:plc:a", like, "1", 1, []store.Link{l}) })
		if err == nil {
			t.Errorf("PutLinks of a %d-byte target: no error", len(l.Target))
		}
	}
	err := db.View(t.Context(), func(tx store.ReadTx) error {
		return tx.(store.Tx).PutLinks("did:plc:a", like, "1", 1, []store.Link{{Target: linkDID, Path: "subject"}})
	})
	if err == nil {
		t.Error("PutLinks in a read transaction: no error")
	}
}

// TestBacklinks_RandomAgainstModel puts, replaces and deletes records with
// random links and checks every count, and the links listed, against a
// model.
func TestBacklinks_RandomAgainstModel(t *testing.T) {
	db := openTemp(t)
	rng := rand.New(rand.NewPCG(1, 2))
	targets := []string{"did:plc:t1", "did:plc:t2", linkPost}
	paths := []string{"subject", "subject.uri", "reply.parent.uri"}
	dids := []string{"did:plc:a", "did:plc:b", "did:plc:c", "did:plc:d"}
	type rec struct{ did, rkey string }
	model := map[rec][]store.Link{}
	for range 400 {
		r := rec{dids[rng.IntN(len(dids))], fmt.Sprint(rng.IntN(10))}
		err := db.Update(t.Context(), func(tx store.Tx) error {
			if rng.IntN(4) == 0 {
				delete(model, r)
				return tx.DeleteRecord(r.did, like, r.rkey)
			}
			var links []store.Link
			for range rng.IntN(4) {
				links = append(links, store.Link{Target: targets[rng.IntN(len(targets))], Path: paths[rng.IntN(len(paths))]})
			}
			model[r] = links
			sr := &store.Record{DID: r.did, Collection: like, RKey: r.rkey, CID: []byte{byte(rng.IntN(3))}, Rev: "3k2"}
			if err := tx.PutRecord(sr); err != nil {
				return err
			}
			return tx.PutLinks(r.did, like, r.rkey, sr.Seq, links)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var total int64
	for _, target := range targets {
		for _, path := range paths {
			var want store.BacklinkCount
			seen := map[string]bool{}
			for r, links := range model {
				if slices.Contains(links, store.Link{Target: target, Path: path}) {
					want.Records++
					if !seen[r.did] {
						seen[r.did] = true
						want.DIDs++
					}
				}
			}
			total += want.Records
			got, _ := countLinks(t, db, target, like, path)
			if got != want {
				t.Errorf("%s from %s: count %+v, want %+v", target, path, got, want)
			}
			if n := len(scanLinks(t, db, store.BacklinkScan{Target: target, Collection: like, Path: path}, 0)); int64(n) != want.Records {
				t.Errorf("%s from %s: %d listed, want %d", target, path, n, want.Records)
			}
		}
	}
	if _, got := countLinks(t, db, "", like, ""); got != total {
		t.Errorf("Counts.Links = %d, want %d", got, total)
	}
}

func TestMigrateSchema4AddsTheBacklinkIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cistern.db")
	db, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	putLinked(t, db, "did:plc:a", like, "1")
	db.Close()
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{"links", "linksrc", "reclinks"} {
			if err := tx.DeleteBucket([]byte(b)); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte("sys")).Put([]byte("schema"), binary.BigEndian.AppendUint64(nil, 4))
	})
	bdb.Close()
	if err != nil {
		t.Fatal(err)
	}
	db, err = boltstore.Open(path, nil)
	if err != nil {
		t.Fatalf("Open of a version 4 file: %v", err)
	}
	defer db.Close()
	putLinked(t, db, "did:plc:b", like, "1", store.Link{Target: linkPost, Path: "subject.uri"})
	if err := db.Update(t.Context(), func(tx store.Tx) error { return tx.DeleteRecord("did:plc:a", like, "1") }); err != nil {
		t.Fatal(err)
	}
	if n, total := countLinks(t, db, linkPost, like, "subject.uri"); n.Records != 1 || total != 1 {
		t.Fatalf("after migration: %+v, total %d", n, total)
	}
}
