package httpapi_test

import (
	"context"
	"testing"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

// An account that moves to another PDS is followed: the #identity that
// names the new host makes the repo resync from it, and records written
// there after the move are applied.
func TestMigration_ResyncsFromTheNewHost(t *testing.T) {
	net := testnet.New(t, testnet.WithHosts(2))
	oldHost, newHost := net.Host(0), net.Host(1)
	alice, err := oldHost.CreateAccount("alice.test", testnet.Records(posts, 3))
	if err != nil {
		t.Fatal(err)
	}
	did := alice.DID().String()
	ix := openIndexer(t, net, filter.Spec{DIDs: []string{did}})
	waitSynced(t, ix, did)
	ctx := context.Background()
	if r, _ := ix.Repo(ctx, did); r.PDS != oldHost.URL() {
		t.Fatalf("PDS %q before the move", r.PDS)
	}

	newHost.ResetRequests()
	if _, err := alice.MoveTo(newHost); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a resync from the new host", func() bool {
		r, err := ix.Repo(ctx, did)
		return err == nil && r.PDS == newHost.URL() && r.State.String() == "synced" &&
			newHost.Requests("com.atproto.sync.getRepo") > 0
	})
	if _, err := alice.CreateRecord(posts, testnet.Post(posts, "on the new host")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the record written after the move", func() bool {
		n, _ := ix.CountRecords(ctx, did, posts)
		return n == 4
	})
}
