package cistern_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/testnet"
)

func TestLive_ReconnectsAndResumesWithoutGap(t *testing.T) {
	net := testnet.New(t)
	accts, err := net.Generate(context.Background(), testnet.GenerateOptions{Accounts: 20, Records: 10, Collections: []string{post}})
	if err != nil {
		t.Fatal(err)
	}
	ix := runConnected(t, net, testConfig(t, net, filter.Spec{FullNetwork: true}))
	for _, a := range accts {
		if err := ix.Track(context.Background(), a.DID().String()); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range accts {
		waitSynced(t, ix, a.DID().String())
	}
	stop := make(chan struct{})
	wait := churn(t, accts, 3, stop)
	for i := 0; i < 5; i++ {
		time.Sleep(150 * time.Millisecond)
		net.Relay().DropConnections()
	}
	close(stop)
	t.Logf("%d commits across 5 dropped connections", wait())
	assertConverged(t, ix, accts...)
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for reason, n := range st.Rejected {
		if n != 0 {
			t.Errorf("%d commits rejected as %s: a message was lost across a reconnect", n, reason)
		}
	}
}

func TestLive_CommitsDuringBackfillAppliedOnceInOrder(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "slow.test", testnet.Records(post, 300))
	net.Host(0).SlowGetRepo(30*time.Millisecond, 4<<10)
	cfg := testConfig(t, net, filter.Spec{})
	ix := runConnected(t, net, cfg)
	did := a.DID().String()
	if err := ix.Track(context.Background(), did); err != nil {
		t.Fatal(err)
	}
	// Write while the getRepo body trickles in.
	eventually(t, 10*time.Second, func() string {
		r, err := ix.Repo(context.Background(), did)
		if err != nil || r.State != store.StateBackfilling {
			return "not backfilling yet"
		}
		return ""
	})
	recs := a.Records()
	for i := 0; i < 10; i++ {
		if _, err := a.Apply(
			testnet.Create(post, "", testnet.Post(post, "during backfill")),
			testnet.Update(post, recs[i].RKey, testnet.Post(post, "edited during backfill")),
		); err != nil {
			t.Fatal(err)
		}
		if err := a.DeleteRecord(post, recs[100+i].RKey); err != nil {
			t.Fatal(err)
		}
	}
	r, err := ix.Repo(context.Background(), did)
	if err != nil || r.State != store.StateBackfilling {
		t.Fatalf("the writes did not land during the backfill (state %v, err %v)", r, err)
	}
	net.Host(0).SlowGetRepo(0, 0)
	waitSynced(t, ix, did)
	assertConverged(t, ix, a) // the fold refuses a doubled create, update or delete
}

func TestDiscovery_ListReposByCollection(t *testing.T) {
	const status = "xyz.statusphere.status"
	net := testnet.New(t)
	withStatus := net.Account(t, "has.test", testnet.Records(status, 2), testnet.Records(post, 3))
	without := net.Account(t, "hasnot.test", testnet.Records(post, 3))
	cfg := testConfig(t, net, filter.Spec{Signals: []string{status}})
	cfg.NoCrawl = false
	ix := runIndexer(t, cfg)
	eventually(t, 20*time.Second, func() string {
		if _, err := ix.Repo(context.Background(), withStatus.DID().String()); err != nil {
			return err.Error()
		}
		return ""
	})
	waitSynced(t, ix, withStatus.DID().String())
	assertConverged(t, ix, withStatus)
	if _, err := ix.Repo(context.Background(), without.DID().String()); err == nil {
		t.Fatal("a repo without a signal record was tracked")
	}
	if n := net.Relay().Requests("com.atproto.sync.listReposByCollection"); n == 0 {
		t.Fatal("listReposByCollection was not called")
	}
}

func TestDiscovery_FullNetworkFindsEveryRepo(t *testing.T) {
	net := testnet.New(t, testnet.WithHosts(2))
	var accts []*testnet.Account
	for i, h := range net.Hosts() {
		got, err := net.Generate(context.Background(), testnet.GenerateOptions{Accounts: 30 + i*7, Records: 5, Collections: []string{post, like}, Hosts: []*testnet.Host{h}})
		if err != nil {
			t.Fatal(err)
		}
		accts = append(accts, got...)
	}
	cfg := testConfig(t, net, filter.Spec{FullNetwork: true})
	cfg.NoCrawl = false
	ix := runIndexer(t, cfg)
	assertConverged(t, ix, accts...)
	// Every repo was found: its records are in. They land before the repo
	// is marked synced (its held commits are drained in between), so a
	// read of the states right now can still see a repo backfilling.
	// WaitSynced is the signal that a repo's backfill is complete: wait
	// for it, then the states are settled.
	dids := make([]string, len(accts))
	for i, a := range accts {
		dids[i] = a.DID().String()
	}
	waitSynced(t, ix, dids...)
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Repos["synced"] != int64(len(accts)) {
		t.Fatalf("repos %v, want %d synced", st.Repos, len(accts))
	}
}

func TestLive_OutdatedCursorResyncsEverything(t *testing.T) {
	net := testnet.New(t, testnet.WithRetention(50))
	a := net.Account(t, "old.test", testnet.Records(post, 3))
	did := a.DID().String()
	cfg := testConfig(t, net, filter.Spec{DIDs: []string{did}})
	cfg.Path = t.TempDir() + "/c.db"
	followOnce(t, cfg, a)
	// While we are away, more than the relay keeps is written.
	for i := 0; i < 60; i++ {
		if _, err := a.CreateRecord(post, testnet.Post(post, "missed")); err != nil {
			t.Fatal(err)
		}
	}
	ix := runIndexer(t, cfg)
	assertConverged(t, ix, a)
	// The repo was resynced because the relay said our cursor was too old,
	// before the retained frames were applied: none of them broke the
	// chain (which a resync would also repair, but only after a rejection).
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Rejected) != 0 {
		t.Fatalf("rejections %v: the outdated cursor was not acted on before the frames", st.Rejected)
	}
}

func TestLive_RestartWithNoCursorYetMissesNothing(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "early.test", testnet.Records(post, 3))
	did := a.DID().String()
	cfg := testConfig(t, net, filter.Spec{DIDs: []string{did}})
	cfg.CursorInterval = time.Hour // only the anchoring saves a cursor
	run := func(during func(ix *cistern.Indexer)) {
		ix, err := cistern.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- ix.Run(ctx) }()
		during(ix)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		ix.Close()
	}
	// First run: backfilled, and no firehose message at all.
	run(func(ix *cistern.Indexer) { waitSynced(t, ix, did) })
	if _, err := a.CreateRecord(post, testnet.Post(post, "while down, no cursor yet")); err != nil {
		t.Fatal(err)
	}
	// Second run: sees the change (by a resync), then one live message.
	run(func(ix *cistern.Indexer) {
		assertConverged(t, ix, a)
		if _, err := a.CreateRecord(post, testnet.Post(post, "live")); err != nil {
			t.Fatal(err)
		}
		assertConverged(t, ix, a)
	})
	if _, err := a.CreateRecord(post, testnet.Post(post, "while down again")); err != nil {
		t.Fatal(err)
	}
	// Third run: resumes from the cursor anchored at the first message.
	cfg2 := cfg
	ix := runIndexer(t, cfg2)
	assertConverged(t, ix, a)
	if st, _ := ix.Stats(context.Background()); st.Rejected[cistern.RejectBrokenChain] != 0 {
		t.Fatalf("a commit was missed and caught only by a broken chain")
	}
}

func TestLive_SeveralSourcesEachKeepACursor(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "two.test", testnet.Records(post, 3))
	did := a.DID().String()
	cfg := testConfig(t, net, filter.Spec{DIDs: []string{did}})
	// The same relay twice, under two names: every commit arrives twice,
	// the second copy is skipped as stale.
	cfg.Sources = []string{net.RelayURL(), net.FirehoseURL()}
	before := net.Relay().Connections()
	ix := runIndexer(t, cfg)
	eventually(t, 10*time.Second, func() string {
		if net.Relay().Connections() < before+2 {
			return "not both connected"
		}
		return ""
	})
	waitSynced(t, ix, did)
	for i := 0; i < 5; i++ {
		if _, err := a.CreateRecord(post, testnet.Post(post, "twice")); err != nil {
			t.Fatal(err)
		}
	}
	assertConverged(t, ix, a)
	eventually(t, 10*time.Second, func() string {
		for _, src := range cfg.Sources {
			var v []byte
			err := ix.Store().View(context.Background(), func(tx store.ReadTx) error {
				var err error
				v, err = tx.Meta("firehose/cursor/" + src)
				return err
			})
			if err != nil || string(v) != fmt.Sprint(net.Relay().Seq()) {
				return fmt.Sprintf("cursor of %s is %q (%v), relay at %d", src, v, err, net.Relay().Seq())
			}
		}
		return ""
	})
}

func TestLive_CloseWhileRunningSavesTheCursor(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "close.test", testnet.Records(post, 2))
	did := a.DID().String()
	cfg := testConfig(t, net, filter.Spec{DIDs: []string{did}})
	cfg.CursorInterval = time.Hour // only the save on the way out counts
	ix, err := cistern.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ix.Run(context.Background()) }()
	waitSynced(t, ix, did)
	for i := 0; i < 3; i++ {
		if _, err := a.CreateRecord(post, testnet.Post(post, "before close")); err != nil {
			t.Fatal(err)
		}
	}
	assertConverged(t, ix, a)
	if err := ix.Close(); err != nil { // stops Run itself
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	ix2, err := cistern.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ix2.Close()
	var v []byte
	err = ix2.Store().View(context.Background(), func(tx store.ReadTx) error {
		var err error
		v, err = tx.Meta("firehose/cursor/" + net.RelayURL())
		return err
	})
	if err != nil || string(v) != fmt.Sprint(net.Relay().Seq()) {
		t.Fatalf("cursor after Close = %q (%v), relay at %d", v, err, net.Relay().Seq())
	}
}

func TestLive_BadCommitHeldDuringBackfillIsDropped(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "heldbad.test", testnet.Records(post, 300))
	did := a.DID().String()
	net.Host(0).SlowGetRepo(20*time.Millisecond, 4<<10)
	ix := runConnected(t, net, testConfig(t, net, filter.Spec{}))
	if err := ix.Track(context.Background(), did); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() string {
		if r, err := ix.Repo(context.Background(), did); err != nil || r.State != store.StateBackfilling {
			return "not backfilling yet"
		}
		return ""
	})
	// A commit from the future arrives while the repo backfills: held, then
	// rejected when the buffer drains. It must not be rejected again after
	// every new backfill.
	if _, err := a.ApplyFaulty(testnet.FaultFutureRev, testnet.Create(post, "", testnet.Post(post, "from the future"))); err != nil {
		t.Fatal(err)
	}
	net.Host(0).SlowGetRepo(0, 0)
	waitSynced(t, ix, did)
	assertConverged(t, ix, a)
	fetches := net.Host(0).Requests("com.atproto.sync.getRepo")
	time.Sleep(300 * time.Millisecond)
	if n := net.Host(0).Requests("com.atproto.sync.getRepo"); n != fetches {
		t.Fatalf("getRepo went on after the repo synced: %d then %d", fetches, n)
	}
}

// TestLive_FrameOverTheLimitIsSkipped: a frame larger than
// FirehoseMaxFrameSize does not stop the indexer (the source would send it
// again and again): it is skipped and counted, the other repos go on, and
// its repo converges when its next commit no longer chains.
func TestLive_FrameOverTheLimitIsSkipped(t *testing.T) {
	net := testnet.New(t)
	big := net.Account(t, "big.test", testnet.Records(post, 3))
	other := net.Account(t, "other.test", testnet.Records(post, 3))
	cfg := testConfig(t, net, filter.Spec{DIDs: []string{big.DID().String(), other.DID().String()}})
	cfg.FirehoseMaxFrameSize = 1 << 20 // FaultOversized frames are over 2 MB
	ix := runIndexer(t, cfg)
	waitSynced(t, ix, big.DID().String(), other.DID().String())
	if _, err := other.CreateRecord(post, testnet.Post(post, "before")); err != nil {
		t.Fatal(err)
	}
	assertConverged(t, ix, other)
	if _, err := big.ApplyFaulty(testnet.FaultOversized, testnet.Create(post, "", testnet.Post(post, "huge"))); err != nil {
		t.Fatal(err)
	}
	if _, err := other.CreateRecord(post, testnet.Post(post, "after")); err != nil {
		t.Fatal(err)
	}
	assertConverged(t, ix, other)
	if _, err := big.CreateRecord(post, testnet.Post(post, "next")); err != nil {
		t.Fatal(err)
	}
	assertConverged(t, ix, big, other)
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Rejected[cistern.RejectBrokenChain] != 1 {
		t.Fatalf("rejections %v: want the one broken chain after the skipped frame", st.Rejected)
	}
}

// TestLive_FutureCursorStartsLiveAgain: a source whose sequence is behind
// our saved cursor (reset, or replaced) answers FutureCursor. The indexer
// does not stop: it forgets the cursor, starts live, resyncs what it holds,
// and goes on applying commits.
func TestLive_FutureCursorStartsLiveAgain(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "reset.test", testnet.Records(post, 3))
	did := a.DID().String()
	cfg := testConfig(t, net, filter.Spec{DIDs: []string{did}})
	cfg.Path = t.TempDir() + "/c.db"
	followOnce(t, cfg, a)
	// The saved cursor is now far ahead of the relay.
	db, err := boltstore.Open(cfg.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(context.Background(), func(tx store.Tx) error {
		return tx.PutMeta("firehose/cursor/"+net.RelayURL(), []byte("1000000"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// Written while we were away, and after we are back.
	if _, err := a.CreateRecord(post, testnet.Post(post, "while away")); err != nil {
		t.Fatal(err)
	}
	ix := runIndexer(t, cfg) // its cleanup fails the test if Run returned an error
	time.Sleep(200 * time.Millisecond)
	if _, err := a.CreateRecord(post, testnet.Post(post, "after")); err != nil {
		t.Fatal(err)
	}
	assertConverged(t, ix, a)
}

// followOnce runs an Indexer with cfg until a is synced and a record it
// writes then is applied live (so a firehose cursor is saved), and closes
// it.
func followOnce(t *testing.T, cfg cistern.Config, a *testnet.Account) {
	t.Helper()
	ix, err := cistern.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ix.Run(ctx) }()
	waitSynced(t, ix, a.DID().String())
	if _, err := a.CreateRecord(post, testnet.Post(post, "seen")); err != nil {
		t.Fatal(err)
	}
	assertConverged(t, ix, a)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
