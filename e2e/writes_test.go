package e2e

import (
	"sort"
	"testing"

	"github.com/cistern-dev/cistern/filter"
)

// Scenario 2: creates, updates (putRecord), deletes and multi-op
// applyWrites commits, live.
func TestWrites_CreateUpdateDeleteApplyWrites(t *testing.T) {
	n := refnet(t)
	const (
		posts = "dev.cistern.ewrite.post"
		likes = "dev.cistern.ewrite.like"
		other = "dev.cistern.ewrite.other" // not stored
	)
	alice := n.createAccount(t, "alice")
	bob := n.createAccount(t, "bob")
	var seeded []writeResult
	for i := range 5 {
		seeded = append(seeded, n.create(t, alice.DID, posts, "seed"))
		n.create(t, bob.DID, likes, "seed")
		if i < 2 {
			n.create(t, alice.DID, other, "seed")
		}
	}

	spec := filter.Spec{DIDs: []string{alice.DID, bob.DID}, Collections: []string{posts, likes}}
	filt := mustFilter(t, spec)
	ix := startIndexer(t, indexerConfig(t, n, dbPath(t), spec))
	waitSynced(t, ix.Indexer, alice.DID, bob.DID)
	assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID, bob.DID)

	// Single-op commits.
	c1 := n.create(t, alice.DID, posts, "created live")
	n.put(t, alice.DID, posts, rkeyOf(seeded[0].URI), "updated by putRecord")
	n.put(t, alice.DID, posts, "self", "created by putRecord")
	n.put(t, alice.DID, posts, "self", "updated again by putRecord")
	n.del(t, alice.DID, posts, rkeyOf(seeded[1].URI))
	n.del(t, alice.DID, posts, rkeyOf(c1.URI)) // created and deleted live
	n.create(t, alice.DID, other, "filtered out")
	n.put(t, bob.DID, likes, "3kaaaaaaaaaaa", "bob puts")

	// One commit, several ops across collections, including one the
	// filter drops.
	multi := n.applyWrites(t, alice.DID,
		opCreate(posts, "multi1", "applyWrites create"),
		opCreate(likes, "", "applyWrites create, generated rkey"),
		opUpdate(posts, rkeyOf(seeded[2].URI), "applyWrites update"),
		opDelete(posts, rkeyOf(seeded[3].URI)),
		opCreate(other, "", "applyWrites filtered"),
	)
	// A commit that creates and another that deletes the same records.
	n.applyWrites(t, bob.DID, opCreate(likes, "tmp1", "x"), opCreate(likes, "tmp2", "y"))
	n.applyWrites(t, bob.DID, opDelete(likes, "tmp1"), opUpdate(likes, "tmp2", "y2"))

	f := assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID, bob.DID)

	// The applyWrites commit is one rev, with one event per stored op.
	evs := f.byRev[alice.DID+" "+multi.Rev]
	var got []string
	for _, ev := range evs {
		if !ev.Live {
			t.Errorf("event %s of a live commit is not marked live", ev)
		}
		got = append(got, ev.Action+" "+ev.Collection)
	}
	sort.Strings(got)
	want := []string{"create " + likes, "create " + posts, "delete " + posts, "update " + posts}
	if len(got) != len(want) {
		t.Fatalf("events of applyWrites commit %s: %v, want %v", multi.Rev, got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events of applyWrites commit %s: %v, want %v", multi.Rev, got, want)
		}
	}
}
