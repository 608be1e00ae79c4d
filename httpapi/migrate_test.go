package httpapi_test

import (
	"context"
	stdnet "net"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/httpapi"
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

// With PDS hosts as firehose sources (Config.HostAuthority), a commit is
// applied only from the host the DID document names. The network's
// firehose is served at host 0's address: host 0's accounts are followed
// live; once alice moves to host 1, commits for her from host 0's firehose
// are ignored, and the resync from host 1 brings her records.
func TestMigration_HostAuthority(t *testing.T) {
	ln, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	net, err := testnet.Start(context.Background(), testnet.Options{Addr: addr, Hosts: 2, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { net.Close() })
	oldHost, newHost := net.Host(0), net.Host(1)
	if oldHost.URL() != net.RelayURL() {
		t.Fatalf("the firehose is not at host 0: %s, %s", net.RelayURL(), oldHost.URL())
	}
	alice, err := oldHost.CreateAccount("alice.test", testnet.Records(posts, 2))
	if err != nil {
		t.Fatal(err)
	}
	bob, err := newHost.CreateAccount("bob.test", testnet.Records(posts, 2))
	if err != nil {
		t.Fatal(err)
	}
	dids := []string{alice.DID().String(), bob.DID().String()}
	ix, err := cistern.Open(cistern.Config{
		Path: t.TempDir() + "/c.db", RelayURL: net.RelayURL(), PLCURL: net.PLCURL(), SkipHandleVerification: true,
		Logger: quiet, Filter: filter.Spec{DIDs: dids}, HostAuthority: true, NoCrawl: true,
		Backfill: cistern.BackfillConfig{MinBackoff: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; ix.Close() })
	waitSynced(t, ix, dids...)
	count := func(did string) int64 { n, _ := ix.CountRecords(ctx, did, posts); return n }

	// Alice's host speaks for her: applied. Bob's commit comes from a host
	// that is not his: ignored.
	if _, err := bob.CreateRecord(posts, testnet.Post(posts, "bob, announced by the wrong host")); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreateRecord(posts, testnet.Post(posts, "alice at home")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's live record", func() bool { return count(dids[0]) == 3 })
	if n := count(dids[1]); n != 2 {
		t.Fatalf("bob has %d records: a commit from a host not his was applied", n)
	}

	// Alice moves; her commits still come through host 0's firehose.
	newHost.ResetRequests()
	if _, err := alice.MoveTo(newHost); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice resynced from her new host", func() bool {
		r, err := ix.Repo(ctx, dids[0])
		return err == nil && r.PDS == newHost.URL() && r.State.String() == "synced" &&
			newHost.Requests("com.atproto.sync.getRepo") > 0
	})
	if _, err := alice.CreateRecord(posts, testnet.Post(posts, "alice moved")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the ignored commit to be counted", func() bool {
		return strings.Contains(string(get(t, serve(t, ix, httpapi.Options{}).URL+"/metrics").Body), "cistern_commits_wrong_host_total 2")
	})
	if n := count(dids[0]); n != 3 {
		t.Fatalf("alice has %d records: a commit from her old host was applied after the move", n)
	}
	// What the new host holds comes with the next resync from it.
	if err := ix.Resync(ctx, dids[0]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's record from her new host", func() bool { return count(dids[0]) == 4 })
}
