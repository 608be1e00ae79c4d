package cistern_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

// recordsOf returns the records of accts in collection, as the events a
// backfill of them would emit (create) or a removal (delete).
func recordsOf(action, collection string, accts ...*testnet.Account) []recEvent {
	var out []recEvent
	for _, a := range accts {
		for _, r := range a.Records() {
			if r.Collection != collection {
				continue
			}
			switch action {
			case "create":
				out = append(out, recEvent{action: store.ActionCreate, path: r.Path(), cid: r.CID.String()})
			case "delete":
				out = append(out, recEvent{action: store.ActionDelete, path: r.Path()})
			}
		}
	}
	return out
}

func TestIndexer_FilterChangesAtRuntime(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(post, 12), testnet.Records(like, 6), testnet.Records(follow, 3))
	bob := net.Account(t, "bob.test", testnet.Records(post, 5), testnet.Records(like, 4))
	carol := net.Account(t, "carol.test", testnet.Records(post, 3), testnet.Records(like, 2))
	ad, bd, cd := alice.DID().String(), bob.DID().String(), carol.DID().String()
	ctx := context.Background()

	cfg := testConfig(t, net, filter.Spec{DIDs: []string{ad, bd}, Collections: []string{post}})
	cfg.NoFirehose = true // the PDS does not change: every event comes from the filter changes
	ix := runIndexer(t, cfg)
	waitSynced(t, ix, ad, bd)
	assertConverged(t, ix, alice, bob)
	assertOnlyCreates(t, ix, []*testnet.Account{alice, bob})

	t.Run("widen re-backfills only the new collection", func(t *testing.T) {
		cursor := newestEvent(t, ix)
		if err := ix.SetFilter(ctx, filter.Spec{DIDs: []string{ad, bd}, Collections: []string{post, like}}); err != nil {
			t.Fatal(err)
		}
		waitSynced(t, ix, ad, bd)
		assertEvents(t, recordEventsAfter(t, ix, cursor), recordsOf("create", like, alice, bob)...)
		assertConverged(t, ix, alice, bob)
	})

	t.Run("narrow deletes the dropped collection", func(t *testing.T) {
		cursor := newestEvent(t, ix)
		spec, err := ix.PatchFilter(ctx, filter.Patch{RemoveCollections: []string{post}, ConfirmDelete: true})
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{like}; len(spec.Collections) != 1 || spec.Collections[0] != want[0] {
			t.Fatalf("PatchFilter returned collections %v, want %v", spec.Collections, want)
		}
		assertEvents(t, recordEventsAfter(t, ix, cursor), recordsOf("delete", post, alice, bob)...)
		for _, a := range []*testnet.Account{alice, bob} {
			if n, err := ix.CountRecords(ctx, a.DID().String(), post); err != nil || n != 0 {
				t.Fatalf("%s keeps %d %s records (%v)", a.Handle(), n, post, err)
			}
		}
		assertConverged(t, ix, alice, bob)
	})

	t.Run("exclude untracks and removes", func(t *testing.T) {
		cursor := newestEvent(t, ix)
		if _, err := ix.PatchFilter(ctx, filter.Patch{AddExcludes: []string{bd}, ConfirmDelete: true}); err != nil {
			t.Fatal(err)
		}
		assertEvents(t, recordEventsAfter(t, ix, cursor), recordsOf("delete", like, bob)...)
		if _, err := ix.Repo(ctx, bd); !errors.Is(err, cistern.ErrNotTracked) {
			t.Fatalf("Repo(bob) after exclusion = %v, want ErrNotTracked", err)
		}
		if n := len(stored(t, ix, bd)); n != 0 {
			t.Fatalf("%d records of bob left", n)
		}
		if n := len(folded(t, ix)[bd]); n != 0 {
			t.Fatalf("the folded log keeps %d records of bob", n)
		}
		if err := ix.Track(ctx, bd); err == nil {
			t.Fatal("Track of an excluded DID succeeded")
		}
		assertConverged(t, ix, alice)
	})

	t.Run("adding a DID tracks it", func(t *testing.T) {
		cursor := newestEvent(t, ix)
		if _, err := ix.PatchFilter(ctx, filter.Patch{AddDIDs: []string{cd}}); err != nil {
			t.Fatal(err)
		}
		waitSynced(t, ix, cd)
		assertEvents(t, recordEventsAfter(t, ix, cursor), recordsOf("create", like, carol)...)
		assertConverged(t, ix, alice, carol)
	})

	t.Run("the filter persists across Close and Open", func(t *testing.T) {
		want := ix.Filter().Spec()
		if !want.Equal(filter.Spec{DIDs: []string{ad, bd, cd}, Collections: []string{like}, Excludes: []string{bd}}) {
			t.Fatalf("filter in force %+v", want)
		}
		if err := ix.Close(); err != nil {
			t.Fatal(err)
		}
		again := cfg
		again.Filter = filter.Spec{}
		ix2, err := cistern.Open(again)
		if err != nil {
			t.Fatal(err)
		}
		defer ix2.Close()
		if got := ix2.Filter().Spec(); !got.Equal(want) {
			t.Fatalf("reopened filter %+v, want %+v", got, want)
		}
		// Reopening with the same filter changes nothing.
		before := newestEvent(t, ix2)
		if err := ix2.SetFilter(ctx, want); err != nil {
			t.Fatal(err)
		}
		if got := recordEventsAfter(t, ix2, before); len(got) != 0 {
			t.Fatalf("setting the same filter emitted %v", got)
		}
		assertConverged(t, ix2, alice, carol)
	})
}

// settle waits until every repo of dids is synced again after a filter
// change (re-queued repos are pending first).
func settle(t testing.TB, ix *cistern.Indexer, dids []string) {
	t.Helper()
	eventually(t, 60*time.Second, func() string {
		for _, did := range dids {
			r, err := ix.Repo(context.Background(), did)
			if err != nil {
				return err.Error()
			}
			if r.State != store.StateSynced {
				return did + " is " + r.State.String()
			}
		}
		return ""
	})
}

func TestIndexer_FilterChangesDuringBackfill(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start []string
		patch filter.Patch
	}{
		{"narrow", []string{post, like}, filter.Patch{RemoveCollections: []string{like}, ConfirmDelete: true}},
		{"widen", []string{post}, filter.Patch{AddCollections: []string{follow}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net := testnet.New(t)
			accts, dids := generate(t, net, 24, 300)
			host := net.Host(0)
			host.SlowGetRepo(10*time.Millisecond, 8<<10)
			cfg := testConfig(t, net, filter.Spec{DIDs: dids, Collections: tc.start})
			cfg.NoFirehose = true
			cfg.Backfill.BatchSize = 50
			// The slow getRepo keeps repos in flight while the filter
			// changes: no sparse walk around it.
			cfg.Backfill.Strategy = backfill.StrategyFull
			ix := runIndexer(t, cfg)

			// Change the filter once a few repos are in, most still in flight
			// or queued.
			eventually(t, 30*time.Second, func() string {
				if host.Requests("com.atproto.sync.getRepo") < 6 {
					return "backfill not started"
				}
				return ""
			})
			st, err := ix.Stats(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("changing the filter with repos by state %v", st.Repos)
			if st.Repos["synced"] == int64(len(dids)) {
				t.Fatal("every repo was synced before the change: the test proves nothing")
			}
			if _, err := ix.PatchFilter(context.Background(), tc.patch); err != nil {
				t.Fatal(err)
			}
			host.SlowGetRepo(0, 0)
			settle(t, ix, dids)
			assertConverged(t, ix, accts...)
		})
	}
}
