package pgstore_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/pgstore"
	"github.com/cistern-dev/cistern/store/pgstore/pgtest"
	"github.com/cistern-dev/cistern/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// openTemp opens a store on a schema of its own.
func openTemp(t testing.TB) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(t.Context(), pgtest.Schema(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openTemp(t) })
}

// TestLinksLeaveNoRows: once every link is removed, no row of the
// backlink index remains (counts at 0 are deleted, not kept).
func TestLinksLeaveNoRows(t *testing.T) {
	s := openTemp(t)
	target := "at://did:plc:x/app.bsky.feed.post/3k"
	write := func(fn func(tx store.Tx) error) {
		t.Helper()
		if err := s.Update(t.Context(), fn); err != nil {
			t.Fatal(err)
		}
	}
	write(func(tx store.Tx) error {
		for i, did := range []string{"did:plc:a", "did:plc:a", "did:plc:b"} {
			rkey := fmt.Sprintf("3k%d", i)
			if err := tx.PutLinks(did, "app.bsky.feed.like", rkey, uint64(i+1), []store.Link{{Target: target, Path: "subject.uri"}}); err != nil {
				return err
			}
			if err := tx.PutLinks(did, "app.bsky.feed.post", rkey, uint64(i+10), []store.Link{{Target: target, Path: "reply.root.uri"}}); err != nil {
				return err
			}
		}
		return nil
	})
	write(func(tx store.Tx) error {
		for i, did := range []string{"did:plc:a", "did:plc:a", "did:plc:b"} {
			rkey := fmt.Sprintf("3k%d", i)
			if err := tx.PutLinks(did, "app.bsky.feed.like", rkey, uint64(i+1), nil); err != nil {
				return err
			}
			if err := tx.DeleteRecord(did, "app.bsky.feed.post", rkey); err != nil {
				return err
			}
		}
		return nil
	})
	for _, table := range []string{"cistern_links", "cistern_backlinks", "cistern_link_counts", "cistern_link_dids"} {
		var n int
		if err := s.Pool().QueryRow(t.Context(), "SELECT count(*) FROM "+table).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s holds %d rows (%v) after every link was removed, want 0", table, n, err)
		}
	}
}
