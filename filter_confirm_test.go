package cistern_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

// The first-hour trap: an indexer storing every collection, patched with
// "add app.bsky.graph.*", must not narrow to graph records and delete the
// rest. A patch that would delete is refused, naming what, and deletes
// nothing until it is confirmed.
func TestIndexer_PatchFilterNeverDeletesUnasked(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(post, 7), testnet.Records(follow, 3))
	bob := net.Account(t, "bob.test", testnet.Records(post, 2))
	ad, bd := alice.DID().String(), bob.DID().String()
	ctx := context.Background()

	cfg := testConfig(t, net, filter.Spec{DIDs: []string{ad, bd}}) // every collection
	cfg.NoFirehose = true
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ix := runIndexer(t, cfg)
	waitSynced(t, ix, ad, bd)
	assertConverged(t, ix, alice, bob)
	count := func() int64 {
		t.Helper()
		var total int64
		for _, did := range []string{ad, bd} {
			n, err := ix.CountRecords(ctx, did, "")
			if err != nil {
				t.Fatal(err)
			}
			total += n
		}
		return total
	}
	if n := count(); n != 12 {
		t.Fatalf("%d records stored, want 12", n)
	}

	// Adding to everything changes nothing.
	spec, err := ix.PatchFilter(ctx, filter.Patch{AddCollections: []string{"app.bsky.graph.*"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Collections) != 0 || !ix.Filter().Stores(post) {
		t.Fatalf("adding to all gave collections %q", spec.Collections)
	}
	if n := count(); n != 12 {
		t.Fatalf("adding a collection to all left %d of 12 records", n)
	}

	// Narrowing and excluding are refused without confirmation, and
	// nothing changes.
	for _, p := range []filter.Patch{
		{RemoveCollections: []string{"*"}, AddCollections: []string{"app.bsky.graph.*"}},
		{AddExcludes: []string{bd}},
	} {
		_, err := ix.PatchFilter(ctx, p)
		var de *filter.DeleteError
		if !errors.As(err, &de) || !errors.Is(err, filter.ErrDeleteNotConfirmed) {
			t.Fatalf("PatchFilter(%+v) = %v; want a *filter.DeleteError", p, err)
		}
	}
	if n := count(); n != 12 || !ix.Filter().Stores(post) || ix.Filter().Excluded(bd) {
		t.Fatalf("refused patches changed something: %d records, filter %+v", n, ix.Filter().Spec())
	}
	if strings.Contains(logs.String(), "deleted") {
		t.Fatalf("a deletion was logged while nothing was deleted:\n%s", logs)
	}

	// Confirmed, the narrowing goes through.
	if _, err := ix.PatchFilter(ctx, filter.Patch{RemoveCollections: []string{"*"}, AddCollections: []string{"app.bsky.graph.*"}, ConfirmDelete: true}); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 3 {
		t.Fatalf("after the confirmed narrowing %d records are stored, want alice's 3 follows", n)
	}
	assertConverged(t, ix, alice, bob)
	// The deletion is logged with its counts: 7 + 2 posts of 2 repos.
	for _, w := range []string{"filter change deleted stored records", "records=9", "repos=2", `collectionsRemoved=[*]`, "collectionsKept=[app.bsky.graph.*]"} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("the log does not say %q:\n%s", w, logs)
		}
	}

	// A confirmed exclusion logs what it removed too.
	if _, err := ix.PatchFilter(ctx, filter.Patch{AddExcludes: []string{ad}, ConfirmDelete: true}); err != nil {
		t.Fatal(err)
	}
	if w := "excludedRecords=3"; !strings.Contains(logs.String(), w) || !strings.Contains(logs.String(), ad) {
		t.Errorf("the log does not say %q for %s:\n%s", w, ad, logs)
	}
}

// syncBuffer is a bytes.Buffer safe for the indexer's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
