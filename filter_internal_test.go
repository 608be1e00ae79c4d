package cistern

import (
	"context"
	"testing"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/filterchange"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

// TestFilterChangeCutShortIsFinished writes a filter change whose effects
// were never carried out (as a crash right after persisting it leaves it),
// then opens the store: the change is finished.
func TestFilterChangeCutShortIsFinished(t *testing.T) {
	const post, like = "app.bsky.feed.post", "app.bsky.feed.like"
	net := testnet.New(t)
	a := net.Account(t, "cut.test", testnet.Records(post, 4), testnet.Records(like, 3))
	did := a.DID().String()
	cfg := offlineConfig(t, net, filter.Spec{DIDs: []string{did}})
	ix, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go ix.Run(ctx)
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	// Narrow to posts, as a crash would leave it: the new filter and the
	// one it changed from are persisted, and nothing else was done.
	from, _ := filter.Spec{DIDs: []string{did}}.Encode()
	to, _ := filter.Spec{DIDs: []string{did}, Collections: []string{post}}.Encode()
	if err := ix.write(ctx, func(tx store.Tx) error {
		if err := tx.PutMeta(filterchange.MetaFilter, to); err != nil {
			return err
		}
		return tx.PutMeta(filterchange.MetaFrom, from)
	}); err != nil {
		t.Fatal(err)
	}
	cancel()
	ix.Close()

	cfg.Filter = filter.Spec{}
	ix, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	if n, err := ix.CountRecords(context.Background(), did, like); err != nil || n != 0 {
		t.Fatalf("likes left after the interrupted narrowing was finished: %d, %v", n, err)
	}
	if n, err := ix.CountRecords(context.Background(), did, post); err != nil || n != 4 {
		t.Fatalf("posts: %d, %v; want 4", n, err)
	}
	if _, unfinished, err := ix.filters.Unfinished(context.Background()); err != nil || unfinished {
		t.Fatalf("change still marked unfinished (%v)", err)
	}
}
