package e2e

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/filter"
)

// Scenario 5: repos whose data changed while cistern was down. First
// cistern catches up from its saved firehose cursor; then, with the
// firehose off, a resync brings the changes in from getRepo as exactly
// the differences; then the firehose replays commits the resync already
// covered, and they must change nothing.
func TestDowntime_RepoChangedWhileDown(t *testing.T) {
	n := refnet(t)
	const coll, coll2 = "dev.cistern.edown.post", "dev.cistern.edown.like"
	alice := n.createAccount(t, "alice")
	bob := n.createAccount(t, "bob")
	var ar, br []writeResult
	for range 6 {
		ar = append(ar, n.create(t, alice.DID, coll, "alice"))
		br = append(br, n.create(t, bob.DID, coll2, "bob"))
	}
	spec := filter.Spec{DIDs: []string{alice.DID, bob.DID}}
	filt := mustFilter(t, spec)
	path := dbPath(t)
	cfg := indexerConfig(t, n, path, spec)

	ix := startIndexer(t, cfg)
	waitSynced(t, ix.Indexer, alice.DID, bob.DID)
	// A live write each, so that cistern has a firehose cursor to resume
	// from (see TestDowntime_NoCursorYet for a cistern that has none).
	n.create(t, alice.DID, coll, "live")
	n.create(t, bob.DID, coll2, "live")
	assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID, bob.DID)
	ix.stop()

	// (a) Down: writes of every kind. Back up: the firehose cursor replays
	// them.
	n.create(t, alice.DID, coll, "while down")
	n.put(t, alice.DID, coll, rkeyOf(ar[0].URI), "updated while down")
	n.del(t, alice.DID, coll, rkeyOf(ar[1].URI))
	n.applyWrites(t, bob.DID, opCreate(coll, "", "x"), opDelete(coll2, rkeyOf(br[0].URI)), opUpdate(coll2, rkeyOf(br[1].URI), "y"))
	n.must(t, "/handle", map[string]any{"did": bob.DID, "handle": newHandle("bobdown")}, nil)
	ix = startIndexer(t, cfg)
	f := assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID, bob.DID)
	mark := f.last
	ix.stop()

	// (b) Down again; back up with no firehose, and a resync of both
	// repos: the backfill diff emits exactly what changed.
	c1 := n.create(t, alice.DID, coll, "down again 1")
	c2 := n.create(t, alice.DID, coll2, "down again 2")
	n.put(t, alice.DID, coll, rkeyOf(ar[2].URI), "updated while down again")
	n.del(t, alice.DID, coll, rkeyOf(ar[3].URI))
	n.applyWrites(t, bob.DID, opCreate(coll2, "fresh", "z"), opDelete(coll2, rkeyOf(br[2].URI)))
	noFirehose := cfg
	noFirehose.NoFirehose, noFirehose.NoCrawl = true, true
	ix = startIndexer(t, noFirehose)
	ctx := context.Background()
	for _, did := range []string{alice.DID, bob.DID} {
		if err := ix.Resync(ctx, did); err != nil {
			t.Fatalf("Resync %s: %v", did, err)
		}
	}
	waitSynced(t, ix.Indexer, alice.DID, bob.DID)
	f = assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID, bob.DID)
	var got []string
	for _, ev := range eventsAfter(t, lib{ix.Indexer}, mark) {
		if ev.Live {
			t.Errorf("resync event %s is marked live", ev)
		}
		got = append(got, ev.Action+" "+ev.uri())
	}
	sort.Strings(got)
	want := []string{
		"create " + c1.URI,
		"create " + c2.URI,
		"update " + ar[2].URI,
		"delete " + ar[3].URI,
		"create at://" + bob.DID + "/" + coll2 + "/fresh",
		"delete " + br[2].URI,
	}
	sort.Strings(want)
	if !equalStrings(got, want) {
		t.Errorf("events of the resync:\n  got  %v\n  want %v", got, want)
	}
	mark = f.last
	ix.stop()

	// (c) The firehose again, from the cursor saved in (a): it replays the
	// commits of (b), which the resync already applied.
	ix = startIndexer(t, cfg)
	last := n.create(t, alice.DID, coll, "after everything")
	f = assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID, bob.DID)
	got = nil
	for _, ev := range eventsAfter(t, lib{ix.Indexer}, mark) {
		got = append(got, ev.Action+" "+ev.uri())
	}
	if want := []string{"create " + last.URI}; !equalStrings(got, want) {
		t.Errorf("events after the firehose replay: %v, want only %v", got, want)
	}
}

// A cistern stopped before the firehose delivered it any message has no
// cursor to resume from: it starts live, and so first resyncs every repo it
// holds (the diff emits only what changed). What was written while it was
// down is caught up at once, not only when the repo's next commit fails to
// chain: the test checks convergence before any new commit, and that no
// commit was rejected.
func TestDowntime_NoCursorYet(t *testing.T) {
	n := refnet(t)
	const coll = "dev.cistern.enocur.post"
	alice := n.createAccount(t, "alice")
	var ar []writeResult
	for range 3 {
		ar = append(ar, n.create(t, alice.DID, coll, "alice"))
	}
	spec := filter.Spec{DIDs: []string{alice.DID}}
	filt := mustFilter(t, spec)
	cfg := indexerConfig(t, n, dbPath(t), spec)
	ix := startIndexer(t, cfg)
	waitSynced(t, ix.Indexer, alice.DID)
	assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID)
	ix.stop()

	n.create(t, alice.DID, coll, "while down")
	n.del(t, alice.DID, coll, rkeyOf(ar[0].URI))
	ix = startIndexer(t, cfg)
	assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID)
	time.Sleep(time.Second) // connected, live
	n.put(t, alice.DID, coll, rkeyOf(ar[1].URI), "next commit")
	assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID)
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Rejected) != 0 {
		t.Fatalf("rejections %v: the restart did not resync before live commits", st.Rejected)
	}
}

// eventsAfter returns the record events with an id above after.
func eventsAfter(t testing.TB, r replica, after uint64) []*event {
	t.Helper()
	evs, err := r.events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []*event
	for _, ev := range evs {
		if ev.ID > after && ev.Kind == "record" {
			out = append(out, ev)
		}
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
