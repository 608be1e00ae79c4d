package cistern_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

const (
	post   = "app.bsky.feed.post"
	like   = "app.bsky.feed.like"
	follow = "app.bsky.graph.follow"
)

func TestIndexer_BackfillThenLive(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(post, 30), testnet.Records(like, 10), testnet.Records(follow, 5))
	bob := net.Account(t, "bob.test", testnet.Records(post, 5))

	ix := runConnected(t, net, testConfig(t, net, filter.Spec{
		DIDs:        []string{alice.DID().String(), bob.DID().String()},
		Collections: []string{post, "app.bsky.graph.*"},
	}))
	waitSynced(t, ix, alice.DID().String(), bob.DID().String())
	assertConverged(t, ix, alice, bob)

	// Live: single ops and a multi-op commit, including an unstored collection.
	recs := alice.Records()
	if _, err := alice.CreateRecord(post, testnet.Post(post, "live one")); err != nil {
		t.Fatal(err)
	}
	var postKey, followKey string
	for _, r := range recs {
		if r.Collection == post && postKey == "" {
			postKey = r.RKey
		}
		if r.Collection == follow && followKey == "" {
			followKey = r.RKey
		}
	}
	if _, err := alice.Apply(
		testnet.Update(post, postKey, testnet.Post(post, "edited")),
		testnet.Delete(follow, followKey),
		testnet.Create(like, "", testnet.Post(like, "not stored")),
		testnet.Create(post, "", testnet.Post(post, "second")),
	); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.PutRecord(post, "3kaaaaaaaaaa2", testnet.Post(post, "put")); err != nil {
		t.Fatal(err)
	}
	assertConverged(t, ix, alice, bob)

	// Live events are marked live and follow the backfill's.
	sawLive := false
	err := ix.Store().View(context.Background(), func(tx store.ReadTx) error {
		backfillDone := false
		return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			if ev.DID != alice.DID().String() {
				return true, nil
			}
			if ev.Live {
				sawLive, backfillDone = true, true
			} else if backfillDone {
				t.Errorf("backfill event %d after a live event", ev.ID)
			}
			return true, nil
		})
	})
	if err != nil || !sawLive {
		t.Fatalf("live events: saw=%v err=%v", sawLive, err)
	}

	// Queries.
	r0 := alice.Records()[0]
	if f := ix.Filter(); f.Stores(r0.Collection) {
		got, err := ix.GetRecord(context.Background(), alice.DID().String(), r0.Collection, r0.RKey)
		if err != nil || got.CID != r0.CID || string(got.Value) != string(r0.Value) {
			t.Fatalf("GetRecord = %+v, %v; want cid %s", got, err, r0.CID)
		}
	}
	if _, err := ix.GetRecord(context.Background(), "not-a-did", post, "x"); err == nil {
		t.Fatal("GetRecord accepted an invalid DID")
	}
	if _, err := ix.GetRecord(context.Background(), alice.DID().String(), post, "nope"); !errors.Is(err, cistern.ErrRecordNotFound) {
		t.Fatalf("GetRecord of a missing record: %v", err)
	}
}

func TestIndexer_ListRecordsPaginates(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(post, 23))
	ix := runConnected(t, net, testConfig(t, net, filter.Spec{DIDs: []string{alice.DID().String()}}))
	waitSynced(t, ix, alice.DID().String())
	ctx := context.Background()
	for _, reverse := range []bool{false, true} {
		var keys []string
		cursor := ""
		for {
			page, err := ix.ListRecords(ctx, alice.DID().String(), post, cistern.ListOptions{Limit: 5, Cursor: cursor, Reverse: reverse})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page.Records {
				keys = append(keys, r.RKey)
			}
			if page.Cursor == "" {
				break
			}
			cursor = page.Cursor
		}
		if len(keys) != 23 {
			t.Fatalf("reverse=%v: %d records, want 23", reverse, len(keys))
		}
		for i := 1; i < len(keys); i++ {
			if (keys[i-1] < keys[i]) != reverse {
				t.Fatalf("reverse=%v: keys out of order at %d: %s, %s", reverse, i, keys[i-1], keys[i])
			}
		}
	}
	if _, err := ix.ListRecords(ctx, alice.DID().String(), post, cistern.ListOptions{Limit: 101}); err == nil {
		t.Fatal("limit 101 accepted")
	}
	if _, err := ix.ListRecords(ctx, alice.DID().String(), "not an nsid", cistern.ListOptions{}); err == nil {
		t.Fatal("invalid collection accepted")
	}
}

func TestIndexer_BadCommitsAreRejectedAndResynced(t *testing.T) {
	faults := []testnet.Fault{testnet.FaultBadSignature, testnet.FaultWrongCommitCID, testnet.FaultBrokenChain,
		testnet.FaultFutureRev, testnet.FaultOversized, testnet.FaultMalformed}
	net := testnet.New(t)
	var accts []*testnet.Account
	var dids []string
	for _, f := range faults {
		a := net.Account(t, f.String()+".test", testnet.Records(post, 3))
		accts = append(accts, a)
		dids = append(dids, a.DID().String())
	}
	ix := runConnected(t, net, testConfig(t, net, filter.Spec{DIDs: dids}))
	waitSynced(t, ix, dids...)
	for i, f := range faults {
		if _, err := accts[i].ApplyFaulty(f, testnet.Create(post, "", testnet.Post(post, "faulty"))); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	want := map[testnet.Fault]cistern.RejectReason{
		testnet.FaultBadSignature:   cistern.RejectBadSignature,
		testnet.FaultWrongCommitCID: cistern.RejectCIDMismatch,
		testnet.FaultBrokenChain:    cistern.RejectBrokenChain,
		testnet.FaultFutureRev:      cistern.RejectFutureRev,
		testnet.FaultOversized:      cistern.RejectTooLarge,
		testnet.FaultMalformed:      cistern.RejectMalformed,
	}
	eventually(t, 30*time.Second, func() string {
		st, err := ix.Stats(context.Background())
		if err != nil {
			return err.Error()
		}
		for f, r := range want {
			if st.Rejected[r] == 0 {
				return "no rejection counted for " + f.String() + " (" + string(r) + ")"
			}
		}
		return ""
	})
	// Each repo resyncs from its PDS to the true state, faulty commit included.
	assertConverged(t, ix, accts...)
	waitSynced(t, ix, dids...)
}

func TestIndexer_SignalDiscoveryFromFirehose(t *testing.T) {
	const status = "xyz.statusphere.status"
	net := testnet.New(t)
	carol := net.Account(t, "carol.test", testnet.Records(post, 4))
	dave := net.Account(t, "dave.test", testnet.Records(post, 4))
	ix := runConnected(t, net, testConfig(t, net, filter.Spec{Signals: []string{status}}))

	// Carol writes a status: she is discovered and backfilled, her live
	// commit held and applied after.
	if _, err := carol.CreateRecord(status, testnet.Post(status, "🙂")); err != nil {
		t.Fatal(err)
	}
	if _, err := dave.CreateRecord(post, testnet.Post(post, "no status")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() string {
		if _, err := ix.Repo(context.Background(), carol.DID().String()); err != nil {
			return err.Error()
		}
		return ""
	})
	waitSynced(t, ix, carol.DID().String())
	assertConverged(t, ix, carol)
	if _, err := ix.Repo(context.Background(), dave.DID().String()); !errors.Is(err, cistern.ErrNotTracked) {
		t.Fatalf("dave tracked without a signal record: %v", err)
	}
}

func TestIndexer_AccountLifecycle(t *testing.T) {
	net := testnet.New(t)
	erin := net.Account(t, "erin.test", testnet.Records(post, 5))
	did := erin.DID().String()
	ix := runConnected(t, net, testConfig(t, net, filter.Spec{DIDs: []string{did}}))
	waitSynced(t, ix, did)
	ctx := context.Background()

	state := func(want store.RepoState) {
		t.Helper()
		eventually(t, 20*time.Second, func() string {
			r, err := ix.Repo(ctx, did)
			if err != nil {
				return err.Error()
			}
			if r.State != want {
				return "state " + r.State.String() + ", want " + want.String()
			}
			return ""
		})
	}
	if _, err := erin.SetHandle("erin2.test"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() string {
		r, err := ix.Repo(ctx, did)
		if err != nil || r.Handle != "erin2.test" {
			return "handle not updated"
		}
		return ""
	})
	if _, err := erin.Deactivate(); err != nil {
		t.Fatal(err)
	}
	state(store.StateDeactivated)
	if _, err := erin.Activate(); err != nil {
		t.Fatal(err)
	}
	state(store.StateSynced)
	if _, err := erin.Takedown(); err != nil {
		t.Fatal(err)
	}
	state(store.StateTakendown)
	if _, err := erin.Activate(); err != nil {
		t.Fatal(err)
	}
	state(store.StateSynced)
	if _, err := erin.CreateRecord(post, testnet.Post(post, "back")); err != nil {
		t.Fatal(err)
	}
	assertConverged(t, ix, erin)
	if _, err := erin.Delete(); err != nil {
		t.Fatal(err)
	}
	// The state says deleted first (so that a backfill in flight stops),
	// the status once the records are gone and the event written.
	eventually(t, 20*time.Second, func() string {
		r, err := ix.Repo(ctx, did)
		if err != nil {
			return err.Error()
		}
		if r.State != store.StateDeleted || r.Status != "deleted" {
			return "state " + r.State.String() + " status " + r.Status + ", want deleted"
		}
		return ""
	})
	if n := len(stored(t, ix, did)); n != 0 {
		t.Fatalf("%d records left after account deletion", n)
	}
	fold := folded(t, ix)
	if n := len(fold[did]); n != 0 {
		t.Fatalf("folded log keeps %d records after deletion", n)
	}
	// The identity and account events are in the log.
	kinds := map[string]int{}
	ix.Store().View(ctx, func(tx store.ReadTx) error {
		return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			switch ev.Kind {
			case store.KindIdentity:
				kinds["identity:"+ev.Handle]++
			case store.KindAccount:
				kinds["account:"+ev.Status]++
			}
			return true, nil
		})
	})
	for _, k := range []string{"identity:erin2.test", "account:deactivated", "account:takendown", "account:", "account:deleted"} {
		if kinds[k] == 0 {
			t.Errorf("no %s event; saw %v", k, kinds)
		}
	}
}

func TestIndexer_RepoKeepsCommitCID(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "cid.test", testnet.Records(post, 3))
	ix := runConnected(t, net, testConfig(t, net, filter.Spec{DIDs: []string{a.DID().String()}}))
	waitSynced(t, ix, a.DID().String())
	check := func(stage string) {
		t.Helper()
		eventually(t, 10*time.Second, func() string {
			r, err := ix.Repo(context.Background(), a.DID().String())
			if err != nil {
				return err.Error()
			}
			if r.Commit != a.CommitCID().String() || r.Rev != a.Rev() || r.Data != a.DataCID().String() {
				return stage + ": repo at " + r.Rev + " " + r.Commit + ", PDS at " + a.Rev() + " " + a.CommitCID().String()
			}
			return ""
		})
	}
	check("after backfill")
	if _, err := a.CreateRecord(post, testnet.Post(post, "next")); err != nil {
		t.Fatal(err)
	}
	check("after a live commit")
}

func TestIndexer_VerifyModes(t *testing.T) {
	for _, mode := range []cistern.VerifyMode{cistern.VerifyBackfill, cistern.VerifyNone} {
		t.Run(string(mode), func(t *testing.T) {
			net := testnet.New(t)
			a := net.Account(t, "sig.test", testnet.Records(post, 3))
			b := net.Account(t, "chain.test", testnet.Records(post, 3))
			cfg := testConfig(t, net, filter.Spec{DIDs: []string{a.DID().String(), b.DID().String()}})
			cfg.Verify = mode
			ix := runConnected(t, net, cfg)
			waitSynced(t, ix, a.DID().String(), b.DID().String())
			// Signatures are not checked live: the commit is applied.
			if _, err := a.ApplyFaulty(testnet.FaultBadSignature, testnet.Create(post, "", testnet.Post(post, "unsigned"))); err != nil {
				t.Fatal(err)
			}
			// The chain still is.
			if _, err := b.ApplyFaulty(testnet.FaultBrokenChain, testnet.Create(post, "", testnet.Post(post, "unchained"))); err != nil {
				t.Fatal(err)
			}
			assertConverged(t, ix, a, b)
			eventually(t, 10*time.Second, func() string {
				st, err := ix.Stats(context.Background())
				switch {
				case err != nil:
					return err.Error()
				case st.Rejected[cistern.RejectBadSignature] != 0:
					t.Fatalf("signature checked in mode %s", mode)
				case st.Rejected[cistern.RejectBrokenChain] == 0:
					return "broken chain not rejected"
				}
				return ""
			})
		})
	}
	if _, err := cistern.ParseVerifyMode("sometimes"); err == nil {
		t.Fatal("ParseVerifyMode accepted a bad mode")
	}
}
