package cistern_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/backfill"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/testnet"
)

// generate creates n accounts of recs records spread round-robin over
// post, like and follow, without firehose frames.
func generate(t testing.TB, net *testnet.Network, n, recs int) ([]*testnet.Account, []string) {
	t.Helper()
	start := time.Now()
	accts, err := net.Generate(context.Background(), testnet.GenerateOptions{
		Accounts: n, Records: recs, Collections: []string{post, like, follow}})
	if err != nil {
		t.Fatal(err)
	}
	dids := make([]string, len(accts))
	for i, a := range accts {
		dids[i] = a.DID().String()
	}
	t.Logf("generated %d repos of %d records (3 collections) in %s", n, recs, time.Since(start).Round(time.Millisecond))
	return accts, dids
}

// assertOnlyCreates checks that the log holds exactly one create per
// wanted record of accts and no other record event: nothing was emitted
// twice, updated or deleted on the way.
func assertOnlyCreates(t testing.TB, ix *cistern.Indexer, accts []*testnet.Account) {
	t.Helper()
	f := ix.Filter()
	seen := map[string]int{}
	other := 0
	err := ix.Store().View(context.Background(), func(tx store.ReadTx) error {
		return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			if ev.Kind != store.KindRecord {
				return true, nil
			}
			if ev.Action != store.ActionCreate {
				other++
				return true, nil
			}
			seen[ev.DID+"/"+ev.Collection+"/"+ev.RKey]++
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if other != 0 {
		t.Errorf("%d update or delete events in a log that should hold only creates", other)
	}
	total := 0
	for _, a := range accts {
		for path := range want(a, f) {
			total++
			if n := seen[a.DID().String()+"/"+path]; n != 1 {
				t.Errorf("%s/%s created %d times", a.Handle(), path, n)
			}
		}
	}
	if len(seen) != total {
		t.Errorf("%d distinct records created, want %d", len(seen), total)
	}
}

func TestIndexer_BackfillStoresExactlyTheFilteredCollections(t *testing.T) {
	net := testnet.New(t)
	accts, dids := generate(t, net, bigRepos, bigRecords)
	cfg := testConfig(t, net, filter.Spec{DIDs: dids, Collections: []string{post, follow}})
	cfg.NoFirehose = true
	start := time.Now()
	ix := runIndexer(t, cfg)
	waitSynced(t, ix, dids...)
	t.Logf("backfilled %d repos of %d records in %s", bigRepos, bigRecords, time.Since(start).Round(time.Millisecond))

	assertConverged(t, ix, accts...)
	assertOnlyCreates(t, ix, accts)

	// The third collection is in every repo and nowhere in the store.
	st, err := ix.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantTotal := 0
	for _, a := range accts {
		wantTotal += len(want(a, ix.Filter()))
		if n, err := ix.CountRecords(context.Background(), a.DID().String(), like); err != nil || n != 0 {
			t.Fatalf("%s: %d %s records stored (err %v), want 0", a.Handle(), n, like, err)
		}
	}
	if wantTotal == 0 || st.Records != int64(wantTotal) {
		t.Fatalf("store counts %d records, want %d", st.Records, wantTotal)
	}
	if st.Repos["synced"] != int64(bigRepos) {
		t.Fatalf("repos by state %v, want %d synced", st.Repos, bigRepos)
	}
}

// TestBackfillCrashChild is the child process of
// TestIndexer_BackfillSurvivesSIGKILL: it backfills the DIDs it is given
// until it is killed.
func TestBackfillCrashChild(t *testing.T) {
	db := os.Getenv("CISTERN_BFCRASH_DB")
	if db == "" {
		t.Skip("child process of TestIndexer_BackfillSurvivesSIGKILL")
	}
	ix, err := cistern.Open(cistern.Config{
		Path:                   db,
		RelayURL:               os.Getenv("CISTERN_BFCRASH_RELAY"),
		PLCURL:                 os.Getenv("CISTERN_BFCRASH_PLC"),
		SkipHandleVerification: true,
		Filter: filter.Spec{DIDs: strings.Split(os.Getenv("CISTERN_BFCRASH_DIDS"), ","),
			Collections: []string{post, follow}},
		NoFirehose: true,
		NoCrawl:    true,
		Backfill: cistern.BackfillConfig{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
			BatchSize: 50},
		Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ix.Run(context.Background()) // until SIGKILL
}

// progress opens the store the killed child left and reports how many
// repos are synced and how many records are stored.
func progress(t *testing.T, path string) (synced, records int64) {
	t.Helper()
	db, err := boltstore.Open(path, nil)
	if err != nil {
		t.Fatalf("open the killed child's store: %v", err)
	}
	defer db.Close()
	err = db.View(context.Background(), func(tx store.ReadTx) error {
		c, err := tx.Counts()
		synced, records = c.ReposByState[store.StateSynced], c.Records
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return synced, records
}

func TestIndexer_BackfillSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns and kills child processes")
	}
	net := testnet.New(t)
	accts, dids := generate(t, net, bigRepos, bigRecords)
	// Slow bodies keep every repo in flight for a while, so that the kills
	// land in the middle of the backfill, often inside a repo.
	host := net.Host(0)
	host.SlowGetRepo(10*time.Millisecond, 32<<10)
	db := t.TempDir() + "/cistern.db"
	rng := rand.New(rand.NewPCG(11, 11))
	var lastRecords int64
	midway := 0
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBackfillCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CISTERN_BFCRASH_DB="+db, "CISTERN_BFCRASH_RELAY="+net.RelayURL(),
			"CISTERN_BFCRASH_PLC="+net.PLCURL(), "CISTERN_BFCRASH_DIDS="+strings.Join(dids, ","))
		before := host.Requests("com.atproto.sync.getRepo")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill a random 200-800 ms after the child's backfill got going
		// (started its 6th fetch), however long the process took to start.
		deadline := time.Now().Add(30 * time.Second)
		for host.Requests("com.atproto.sync.getRepo")-before < 6 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		synced, records := progress(t, db)
		t.Logf("kill %d: %d/%d repos synced, %d records stored", round+1, synced, len(dids), records)
		if synced < int64(len(dids)) && records > lastRecords {
			midway++
		}
		lastRecords = records
	}
	if midway == 0 {
		t.Fatal("no kill landed in the middle of the backfill (nothing written, or everything synced)")
	}

	// Restart in process at full speed, with the persisted filter.
	host.SlowGetRepo(0, 0)
	cfg := testConfig(t, net, filter.Spec{})
	cfg.Path, cfg.NoFirehose = db, true
	ix := runIndexer(t, cfg)
	if got := ix.Filter().Spec(); len(got.DIDs) != len(dids) {
		t.Fatalf("persisted filter lists %d DIDs, want %d", len(got.DIDs), len(dids))
	}
	waitSynced(t, ix, dids...)
	assertConverged(t, ix, accts...)
	assertOnlyCreates(t, ix, accts)
}

// recEvent is a record event reduced to what a test compares.
type recEvent struct {
	action store.Action
	path   string
	cid    string
}

func (e recEvent) String() string { return e.action.String() + " " + e.path + " " + e.cid }

// recordEventsAfter returns the record events after cursor, sorted, and
// fails on any other kind of event or on a live one.
func recordEventsAfter(t testing.TB, ix *cistern.Indexer, cursor uint64) []recEvent {
	t.Helper()
	var out []recEvent
	err := ix.Store().View(context.Background(), func(tx store.ReadTx) error {
		return tx.ScanEvents(cursor, func(ev *store.Event) (bool, error) {
			if ev.Kind != store.KindRecord {
				return false, fmt.Errorf("event %d is a %s event", ev.ID, ev.Kind)
			}
			e := recEvent{action: ev.Action, path: ev.Collection + "/" + ev.RKey}
			if ev.CID != nil {
				c, err := cid.Cast(ev.CID)
				if err != nil {
					return false, err
				}
				e.cid = c.String()
			}
			out = append(out, e)
			return true, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func newestEvent(t testing.TB, ix *cistern.Indexer) uint64 {
	t.Helper()
	var newest uint64
	err := ix.Store().View(context.Background(), func(tx store.ReadTx) error {
		var err error
		_, newest, err = tx.EventBounds()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return newest
}

func assertEvents(t testing.TB, got []recEvent, want ...recEvent) {
	t.Helper()
	sort.Slice(want, func(i, j int) bool { return want[i].String() < want[j].String() })
	g, w := fmt.Sprint(got), fmt.Sprint(want)
	if g != w {
		t.Fatalf("events:\n got  %s\n want %s", g, w)
	}
}

func TestIndexer_ResyncEmitsOnlyTheDifference(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(post, 20), testnet.Records(like, 5))
	did := alice.DID().String()
	cfg := testConfig(t, net, filter.Spec{DIDs: []string{did}, Collections: []string{post}})
	cfg.NoFirehose = true
	ix := runIndexer(t, cfg)
	waitSynced(t, ix, did)
	assertConverged(t, ix, alice)
	cursor := newestEvent(t, ix)

	// Behind the indexer's back: one update, one delete, one create in the
	// stored collection, and changes to a collection that is not stored.
	var posts, likes []testnet.Record
	for _, r := range alice.Records() {
		switch r.Collection {
		case post:
			posts = append(posts, r)
		case like:
			likes = append(likes, r)
		}
	}
	upd, del := posts[3], posts[7]
	if _, err := alice.Apply(
		testnet.Update(post, upd.RKey, testnet.Post(post, "edited")),
		testnet.Delete(post, del.RKey),
		testnet.Create(post, "3kzzzzzzzzzz2", testnet.Post(post, "new")),
		testnet.Delete(like, likes[0].RKey),
		testnet.Create(like, "", testnet.Post(like, "not stored")),
	); err != nil {
		t.Fatal(err)
	}
	if got := recordEventsAfter(t, ix, cursor); len(got) != 0 {
		t.Fatalf("events without a firehose or a resync: %v", got)
	}

	if err := ix.Resync(context.Background(), did); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, ix, did)
	updated, _ := alice.Record(post, upd.RKey)
	created, _ := alice.Record(post, "3kzzzzzzzzzz2")
	assertEvents(t, recordEventsAfter(t, ix, cursor),
		recEvent{store.ActionUpdate, upd.Path(), updated.CID.String()},
		recEvent{store.ActionDelete, del.Path(), ""},
		recEvent{store.ActionCreate, created.Path(), created.CID.String()},
	)
	assertConverged(t, ix, alice)
	r, err := ix.Repo(context.Background(), did)
	if err != nil || r.Rev != alice.Rev() {
		t.Fatalf("repo after resync: %+v, %v; want rev %s", r, err, alice.Rev())
	}

	// A second resync with nothing changed emits nothing.
	cursor = newestEvent(t, ix)
	if err := ix.Resync(context.Background(), did); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, ix, did)
	if got := recordEventsAfter(t, ix, cursor); len(got) != 0 {
		t.Fatalf("resync of an unchanged repo emitted %v", got)
	}
}

func TestIndexer_RateLimitPausesOnlyThatHost(t *testing.T) {
	const pause = 3 * time.Second
	net := testnet.New(t, testnet.WithHosts(2))
	limited, err := net.Generate(context.Background(), testnet.GenerateOptions{
		Accounts: 3, Records: 10, Hosts: []*testnet.Host{net.Host(0)}})
	if err != nil {
		t.Fatal(err)
	}
	free, err := net.Generate(context.Background(), testnet.GenerateOptions{
		Accounts: 5, Records: 10, Hosts: []*testnet.Host{net.Host(1)}})
	if err != nil {
		t.Fatal(err)
	}
	var dids []string
	for _, a := range append(append([]*testnet.Account{}, limited...), free...) {
		dids = append(dids, a.DID().String())
	}
	net.Host(0).RateLimitNext("com.atproto.sync.getRepo", 1, pause)

	cfg := testConfig(t, net, filter.Spec{DIDs: dids})
	cfg.NoFirehose = true
	cfg.Backfill.PerHost = 1                   // the limited host's repos queue behind the 429
	cfg.Backfill.MaxBackoff = 10 * time.Second // do not cap the host's Retry-After
	start := time.Now()
	ix := runIndexer(t, cfg)
	ctx := context.Background()

	// The other host's repos sync while the limited host waits.
	for _, a := range free {
		waitSynced(t, ix, a.DID().String())
	}
	if el := time.Since(start); el >= pause {
		t.Logf("the free host took %s, not less than the pause; the check below is void", el)
	} else {
		for _, a := range limited {
			r, err := ix.Repo(ctx, a.DID().String())
			if err != nil {
				t.Fatal(err)
			}
			if r.State == store.StateSynced {
				t.Fatalf("%s synced %s after start, inside the host's %s pause", a.Handle(), time.Since(start), pause)
			}
		}
	}
	// The repo that got the 429 waits for the time the host asked for,
	// not counted as a failure.
	var paused []*cistern.Repo
	eventually(t, 10*time.Second, func() string {
		paused = paused[:0]
		for _, a := range limited {
			r, err := ix.Repo(ctx, a.DID().String())
			if err != nil {
				return err.Error()
			}
			if r.ErrorKind == backfill.KindRateLimited {
				paused = append(paused, r)
			}
		}
		if len(paused) == 0 {
			return "no repo of the limited host is marked rate limited"
		}
		return ""
	})
	for _, r := range paused {
		if r.NextAttempt.IsZero() || r.NextAttempt.Before(start.Add(pause-time.Second)) {
			t.Fatalf("%s: NextAttempt %s, want about %s after the start", r.DID, r.NextAttempt, pause)
		}
		if r.Retries != 0 {
			t.Fatalf("%s: a rate limit counted as %d retries", r.DID, r.Retries)
		}
	}
	// After the pause every repo of the limited host syncs.
	for _, a := range limited {
		waitSynced(t, ix, a.DID().String())
	}
	if el := time.Since(start); el < pause-time.Second {
		t.Fatalf("the limited host's repos synced after %s, before its pause ended", el)
	}
	for _, r := range paused {
		after, err := ix.Repo(ctx, r.DID)
		if err != nil {
			t.Fatal(err)
		}
		if after.Updated.Before(r.NextAttempt) {
			t.Fatalf("%s synced at %s, before its NextAttempt %s", r.DID, after.Updated, r.NextAttempt)
		}
		if after.ErrorKind != "" || !after.NextAttempt.IsZero() {
			t.Fatalf("%s synced but keeps error %q, next attempt %s", r.DID, after.ErrorKind, after.NextAttempt)
		}
	}
	if n := net.Host(1).Requests("com.atproto.sync.getRepo"); n != int64(len(free)) {
		t.Fatalf("the free host got %d getRepo, want %d (one per repo)", n, len(free))
	}
	assertConverged(t, ix, append(limited, free...)...)
}

func TestIndexer_WaitSyncedReportsTheRepoError(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "failing.test", testnet.Records(post, 3))
	net.Host(0).FailNext("com.atproto.sync.getRepo", 100, 500)
	ix := runIndexer(t, testConfig(t, net, filter.Spec{DIDs: []string{a.DID().String()}}))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := ix.WaitSynced(ctx, a.DID().String())
	var re *cistern.RepoError
	if !errors.As(err, &re) {
		t.Fatalf("WaitSynced = %v, want a *cistern.RepoError", err)
	}
	if re.DID != a.DID().String() || re.State != store.StateError || re.Kind != backfill.KindHTTP {
		t.Fatalf("RepoError = %+v, want did %s, state error, kind %s", re, a.DID(), backfill.KindHTTP)
	}
	if !strings.Contains(re.Error(), "500") {
		t.Errorf("error %q does not name the status", re.Error())
	}

	// Once the host answers again the retry brings it in (WaitSynced
	// reports the error as long as the repo is in it, so poll).
	net.Host(0).ClearFaults()
	eventually(t, 20*time.Second, func() string {
		r, err := ix.Repo(ctx, a.DID().String())
		if err != nil {
			return err.Error()
		}
		if r.State != store.StateSynced {
			return "state " + r.State.String()
		}
		return ""
	})
	assertConverged(t, ix, a)

	// A repo nobody tracks is not waited for.
	stranger := net.Account(t, "stranger.test")
	if err := ix.WaitSynced(ctx, stranger.DID().String()); !errors.Is(err, cistern.ErrNotTracked) {
		t.Fatalf("WaitSynced of an untracked repo = %v, want ErrNotTracked", err)
	}
}
