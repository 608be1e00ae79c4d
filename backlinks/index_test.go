package backlinks_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/bluesky-social/indigo/atproto/atdata"
	"github.com/cistern-dev/cistern/backlinks"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
)

const target = "at://did:plc:target/app.bsky.feed.post/3kpost"

func likeValue(t testing.TB, subject string) []byte {
	m, err := atdata.UnmarshalJSON([]byte(`{"$type":"app.bsky.feed.like","createdAt":"2026-01-01T00:00:00Z","subject":{"uri":"` + subject + `","cid":"bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}}`))
	if err != nil {
		t.Fatal(err)
	}
	v, err := atdata.MarshalCBOR(m)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fill stores likes of target by several repos, without links (as a store
// written with the index off holds them), plus one malformed value.
func fill(t testing.TB, st store.Store, repos, perRepo int) {
	t.Helper()
	err := st.Update(context.Background(), func(tx store.Tx) error {
		for i := range repos {
			did := fmt.Sprintf("did:plc:r%03d", i)
			if err := tx.PutRepo(&store.Repo{DID: did, State: store.StateSynced}); err != nil {
				return err
			}
			for j := range perRepo {
				v := likeValue(t, target)
				if i == 0 && j == 0 {
					v = []byte{0xbf} // malformed: indexed without links
				}
				r := &store.Record{DID: did, Collection: "app.bsky.feed.like", RKey: fmt.Sprintf("3k%04d", j),
					CID: []byte(fmt.Sprintf("cid%d-%d", i, j)), Rev: "3k2", Value: v}
				if err := tx.PutRecord(r); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func openStore(t testing.TB, path string) *boltstore.DB {
	t.Helper()
	db, err := boltstore.Open(path, &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// writeVia runs closures straight in store transactions, counting them.
func writeVia(st store.Store, n *int) func(context.Context, func(store.Tx) error) error {
	return func(ctx context.Context, fn func(store.Tx) error) error {
		*n++
		return st.Update(ctx, fn)
	}
}

func TestBuild_ResumesAfterAnInterruption(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	db := openStore(t, path)
	fill(t, db, 7, 13) // 91 records, 90 likes
	ctx := context.Background()

	// The first build is cancelled after its third batch, as by a crash
	// or Close: the fourth batch's transaction does not run.
	writes := 0
	bctx, cancel := context.WithCancel(ctx)
	x := backlinks.New(backlinks.Options{Store: db, Enabled: true, BatchSize: 10, Write: func(ctx context.Context, fn func(store.Tx) error) error {
		writes++
		if writes == 5 { // Open, then three batches
			cancel()
		}
		return db.Update(ctx, fn)
	}})
	if err := x.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.Build(bctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Build cancelled: %v", err)
	}
	_, err := x.Count(ctx, target, "app.bsky.feed.like:subject.uri")
	var be *backlinks.BuildingError
	if !errors.As(err, &be) || !errors.Is(err, backlinks.ErrBuilding) || be.Done != 30 || be.Total != 91 {
		t.Fatalf("Count while building: %v; want a BuildingError at 30 of 91", err)
	}
	var s backlinks.Status
	db.View(ctx, func(tx store.ReadTx) error { s, err = x.Status(tx); return err })
	if s.State != backlinks.StateBuilding || s.Done != 30 || s.Malformed != 1 {
		t.Fatalf("status while building: %+v; want 30 done, 1 malformed", s)
	}
	db.Close()

	// Reopened, the build resumes where it stopped: 61 records left, in
	// seven batches of 10 (the last one visits one and finds no more repos).
	db = openStore(t, path)
	defer db.Close()
	writes = 0
	x = backlinks.New(backlinks.Options{Store: db, Enabled: true, BatchSize: 10, Write: writeVia(db, &writes)})
	if err := x.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.Build(ctx); err != nil {
		t.Fatal(err)
	}
	if writes != 1+7 {
		t.Errorf("resumed build took %d transactions, want 8 (Open and 7 batches)", writes)
	}
	n, err := x.Count(ctx, target, "app.bsky.feed.like:subject.uri")
	if err != nil || n != (store.BacklinkCount{Records: 90, DIDs: 7}) {
		t.Fatalf("Count after the build: %+v, %v; want 90 records of 7 DIDs", n, err)
	}
	if err := backlinks.Verify(ctx, db); err != nil {
		t.Fatal(err)
	}
	db.View(ctx, func(tx store.ReadTx) error { s, err = x.Status(tx); return err })
	if s.State != backlinks.StateReady || s.Done != 91 || s.Links != 90 {
		t.Fatalf("status %+v", s)
	}
}

func TestOpen_OffMakesTheIndexStaleAndOnRebuildsIt(t *testing.T) {
	db := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	defer db.Close()
	fill(t, db, 3, 5)
	ctx := context.Background()
	var writes int
	on := backlinks.New(backlinks.Options{Store: db, Enabled: true, Write: writeVia(db, &writes)})
	if err := on.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if err := on.Build(ctx); err != nil {
		t.Fatal(err)
	}

	// Off: queries are refused, and records change without the index.
	off := backlinks.New(backlinks.Options{Store: db, Write: writeVia(db, &writes)})
	if err := off.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := off.Count(ctx, target, "app.bsky.feed.like:subject.uri"); !errors.Is(err, backlinks.ErrOff) {
		t.Fatalf("Count with the index off: %v", err)
	}
	err := db.Update(ctx, func(tx store.Tx) error {
		return tx.PutRecord(&store.Record{DID: "did:plc:r001", Collection: "app.bsky.feed.like", RKey: "3k0000",
			CID: []byte("moved"), Rev: "3k3", Value: likeValue(t, target+"x")})
	})
	if err != nil {
		t.Fatal(err)
	}
	// A read-only Index (a replica) sees the stale index as off too.
	ro := backlinks.New(backlinks.Options{Store: db})
	if _, err := ro.Count(ctx, target, "app.bsky.feed.like:subject.uri"); !errors.Is(err, backlinks.ErrOff) {
		t.Fatalf("read-only Count of a stale index: %v", err)
	}

	// On again: rebuilt, and exact.
	on = backlinks.New(backlinks.Options{Store: db, Enabled: true, Write: writeVia(db, &writes)})
	if err := on.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := on.Count(ctx, target, "app.bsky.feed.like:subject.uri"); !errors.Is(err, backlinks.ErrBuilding) {
		t.Fatalf("Count before the rebuild: %v", err)
	}
	if err := on.Build(ctx); err != nil {
		t.Fatal(err)
	}
	if err := backlinks.Verify(ctx, db); err != nil {
		t.Fatal(err)
	}
	if n, err := on.Count(ctx, target, "app.bsky.feed.like:subject.uri"); err != nil || n.Records != 13 {
		t.Fatalf("Count after the rebuild: %+v, %v; want 13", n, err)
	}
	if n, err := ro.Count(ctx, target, "app.bsky.feed.like:subject.uri"); err != nil || n.Records != 13 {
		t.Fatalf("read-only Count of a ready index: %+v, %v; want 13", n, err)
	}
}
