package e2e

import (
	"context"
	"testing"

	"github.com/cistern-dev/cistern/filter"
)

// Scenario 3: a handle change, deactivate and activate, a takedown and its
// reversal, an account deletion.
func TestAccounts_IdentityAndStatus(t *testing.T) {
	n := refnet(t)
	const coll = "dev.cistern.eacct.post"
	alice := n.createAccount(t, "alice")
	bob := n.createAccount(t, "bob") // untouched bystander
	for range 4 {
		n.create(t, alice.DID, coll, "alice")
		n.create(t, bob.DID, coll, "bob")
	}
	spec := filter.Spec{DIDs: []string{alice.DID, bob.DID}}
	filt := mustFilter(t, spec)
	ix := startIndexer(t, indexerConfig(t, n, dbPath(t), spec))
	waitSynced(t, ix.Indexer, alice.DID, bob.DID)
	r := lib{ix.Indexer}
	check := func(step string) *fold {
		t.Helper()
		t.Logf("step: %s", step)
		return assertConverged(t, n, r, filt, alice.DID, bob.DID)
	}
	check("synced")

	// Handle change: an #identity event; cistern re-resolves.
	newHandle := newHandle("alicenew")
	n.must(t, "/handle", map[string]any{"did": alice.DID, "handle": newHandle}, nil)
	f := check("handle changed")
	if h := f.handles[alice.DID]; h != newHandle {
		t.Errorf("last identity event of alice says %q, want %q", h, newHandle)
	}

	// Deactivate, then activate; the repo is synced again afterwards and
	// follows new writes.
	n.must(t, "/deactivate", map[string]any{"did": alice.DID}, nil)
	check("deactivated")
	n.must(t, "/activate", map[string]any{"did": alice.DID}, nil)
	check("activated")
	n.create(t, alice.DID, coll, "after activation")
	check("written after activation")

	// Takedown and its reversal.
	n.must(t, "/takedown", map[string]any{"did": alice.DID}, nil)
	check("taken down")
	n.must(t, "/takedown", map[string]any{"did": alice.DID, "applied": false}, nil)
	check("takedown reversed")
	n.create(t, alice.DID, coll, "after reversal")
	check("written after reversal")

	// Account deletion: records removed, each with a delete event.
	before := len(f.recordsOf(alice.DID))
	n.must(t, "/delete-account", map[string]any{"did": alice.DID}, nil)
	f = check("deleted")
	if before == 0 {
		t.Fatal("alice had no records before deletion; the check proves nothing")
	}
	rv, err := r.repo(context.Background(), alice.DID)
	if err != nil {
		t.Fatal(err)
	}
	if rv == nil || rv.State != "deleted" {
		t.Errorf("alice after account deletion: %+v, want state deleted", rv)
	}
	if ev := f.accounts[alice.DID]; ev == nil || ev.Active {
		t.Errorf("last account event of alice: %v, want an inactive one", ev)
	}
	if got := len(f.recordsOf(bob.DID)); got != 4 {
		t.Errorf("bystander bob folds to %d records, want 4", got)
	}
}
