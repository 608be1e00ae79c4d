package e2e

import (
	"context"
	"errors"
	"testing"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
)

// Scenario 1: accounts with records in several collections, found by a
// signal collection (existing records through the crawler, new ones
// through the firehose), listed explicitly or tracked at runtime; the
// collection filter decides what is stored.
func TestTracking_SignalsExplicitAndCollectionFilter(t *testing.T) {
	n := refnet(t)
	const (
		signal = "dev.cistern.etrack.signal"
		noteA  = "dev.cistern.etrack.note.a"
		noteB  = "dev.cistern.etrack.note.b"
		post   = "app.bsky.feed.post" // not stored
	)
	writeAll := func(a account, tag string) {
		for _, c := range []string{noteA, noteB, post} {
			for range 3 {
				n.create(t, a.DID, c, tag+" "+c)
			}
		}
	}
	// Before cistern starts: alice holds the signal (the crawler must find
	// her), bob is listed explicitly, carol is neither.
	alice := n.createAccount(t, "alice")
	writeAll(alice, "alice")
	n.create(t, alice.DID, signal, "alice signals")
	bob := n.createAccount(t, "bob")
	writeAll(bob, "bob")
	carol := n.createAccount(t, "carol")
	writeAll(carol, "carol")
	dave := n.createAccount(t, "dave")
	writeAll(dave, "dave")
	erin := n.createAccount(t, "erin")
	writeAll(erin, "erin")

	spec := filter.Spec{
		Signals:     []string{signal},
		DIDs:        []string{bob.DID},
		Collections: []string{signal, "dev.cistern.etrack.note.*"},
	}
	ix := startIndexer(t, indexerConfig(t, n, dbPath(t), spec))
	waitSynced(t, ix.Indexer, alice.DID, bob.DID)

	// dave writes the signal after cistern started: the firehose finds him.
	n.create(t, dave.DID, signal, "dave signals")
	// erin is tracked at runtime.
	if err := ix.Track(context.Background(), erin.DID); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, ix.Indexer, dave.DID, erin.DID)
	// More writes once everyone is synced, in stored and filtered
	// collections alike.
	for _, a := range []account{alice, bob, carol, dave, erin} {
		n.create(t, a.DID, noteA, "later")
		n.create(t, a.DID, post, "later")
	}

	filt := mustFilter(t, spec)
	f := assertConverged(t, n, lib{ix.Indexer}, filt, alice.DID, bob.DID, dave.DID, erin.DID)

	// Tracked for the right reason; carol never.
	for did, reason := range map[string]string{alice.DID: "signal", bob.DID: "explicit", dave.DID: "signal", erin.DID: "explicit"} {
		r, err := ix.Repo(context.Background(), did)
		if err != nil {
			t.Fatal(err)
		}
		if r.Reason != reason {
			t.Errorf("%s tracked for %q, want %q", did, r.Reason, reason)
		}
		if r.Records == 0 {
			t.Errorf("%s: no records stored", did)
		}
	}
	if _, err := ix.Repo(context.Background(), carol.DID); !errors.Is(err, cistern.ErrNotTracked) {
		t.Errorf("carol (no signal, not listed): Repo = %v, want ErrNotTracked", err)
	}
	if f.dids[carol.DID] {
		t.Errorf("the log has events of carol, who is not tracked")
	}
	// The filtered collection is neither stored nor emitted.
	for u := range f.seen {
		if c, _ := splitURI(u); c == post {
			t.Errorf("event for %s, whose collection the filter does not store", u)
		}
	}
	counts, err := ix.CollectionCounts(context.Background(), alice.DID)
	if err != nil {
		t.Fatal(err)
	}
	if counts[noteA] != 4 || counts[noteB] != 3 || counts[signal] != 1 || counts[post] != 0 {
		t.Errorf("alice's collection counts %v, want %s:4 %s:3 %s:1 and no %s", counts, noteA, noteB, signal, post)
	}
}
