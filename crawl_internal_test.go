package cistern

import (
	"context"
	"testing"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/crawl"
	"github.com/cistern-dev/cistern/testnet"
)

// A signal removed and added again while its crawl is under way restarts
// the crawl: the walk in flight may not save its next page over the reset,
// or the repos before its cursor that wrote in between would be missed.
func TestCrawl_FilterChangeRestartsACrawlUnderWay(t *testing.T) {
	const sig = "xyz.statusphere.status"
	ctx := context.Background()
	net := testnet.New(t)
	ix, err := Open(offlineConfig(t, net, filter.Spec{Signals: []string{sig}}))
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	key := crawl.SignalKey(sig)

	saved, err := ix.crawler.StartCursor(ctx, key, crawl.StartMarker)
	if err != nil || saved != crawl.StartMarker {
		t.Fatalf("startCrawl = %q, %v; want the start marker", saved, err)
	}
	if ok, err := ix.crawler.AdvanceCursor(ctx, key, saved, "page2"); !ok || err != nil {
		t.Fatalf("advanceCrawl to page2 = %v, %v; want saved", ok, err)
	}
	for _, p := range []filter.Patch{{RemoveSignals: []string{sig}}, {AddSignals: []string{sig}}} {
		if _, err := ix.PatchFilter(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := ix.crawler.AdvanceCursor(ctx, key, "page2", "page3"); ok || err != nil {
		t.Fatalf("advanceCrawl after the signal was added again = %v, %v; want refused", ok, err)
	}
	if saved, err := ix.crawler.StartCursor(ctx, key, crawl.StartMarker); err != nil || saved != crawl.StartMarker {
		t.Fatalf("startCrawl after the reset = %q, %v; want the crawl started again", saved, err)
	}

	// A change that leaves the signal alone leaves its crawl alone.
	if ok, err := ix.crawler.AdvanceCursor(ctx, key, crawl.StartMarker, "page2"); !ok || err != nil {
		t.Fatalf("advanceCrawl = %v, %v; want saved", ok, err)
	}
	if _, err := ix.PatchFilter(ctx, filter.Patch{RemoveCollections: []string{"*"}, AddCollections: []string{"app.bsky.feed.post"}, ConfirmDelete: true}); err != nil {
		t.Fatal(err)
	}
	if ok, err := ix.crawler.AdvanceCursor(ctx, key, "page2", "page3"); !ok || err != nil {
		t.Fatalf("advanceCrawl after an unrelated change = %v, %v; want saved", ok, err)
	}
}
