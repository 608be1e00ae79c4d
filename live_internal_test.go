package cistern

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/firehose"
	"github.com/cistern-dev/cistern/internal/ingest"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

// TestHandleSync feeds #sync frames straight to the indexer, which follows
// no firehose, so that what it holds can be made to differ from the PDS.
func TestHandleSync(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "sync.test", testnet.Records("app.bsky.feed.post", 5))
	did := a.DID().String()
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{DIDs: []string{did}}))
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	syncFrame := func() *firehose.Message {
		t.Helper()
		seq, err := a.EmitSync()
		if err != nil {
			t.Fatal(err)
		}
		raw, ok := net.Relay().Frame(seq)
		if !ok {
			t.Fatalf("no frame %d", seq)
		}
		m, err := firehose.DecodeFrame(raw)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	state := func() *store.Repo {
		r, err := ix.repos.Get(ctx, did)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// A #sync of the state we hold: nothing to do.
	if err := ix.ing.HandleMessage(ctx, "test", syncFrame()); err != nil {
		t.Fatal(err)
	}
	if r := state(); r.State != store.StateSynced {
		t.Fatalf("state %v after a #sync of the same data", r.State)
	}

	// The repo changes without us seeing the commit; a #sync announces it.
	if _, err := a.CreateRecord("app.bsky.feed.post", testnet.Post("app.bsky.feed.post", "unseen")); err != nil {
		t.Fatal(err)
	}
	if err := ix.ing.HandleMessage(ctx, "test", syncFrame()); err != nil {
		t.Fatal(err)
	}
	if r := state(); r.State == store.StateSynced && r.Data != a.DataCID().String() {
		t.Fatalf("a #sync with other data left the repo synced at %s", r.Data)
	}
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	if r := state(); r.Data != a.DataCID().String() || r.Rev != a.Rev() {
		t.Fatalf("after resync: data %s rev %s, PDS %s %s", r.Data, r.Rev, a.DataCID(), a.Rev())
	}
	n, err := ix.CountRecords(ctx, did, "")
	if err != nil || n != 6 {
		t.Fatalf("CountRecords = %d, %v; want 6", n, err)
	}
}

// TestHandleSyncDuringBackfill: a #sync that announces a newer state while
// the repo backfills from an older CAR makes the backfill run again.
func TestHandleSyncDuringBackfill(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "syncbf.test", testnet.Records("app.bsky.feed.post", 300))
	did := a.DID().String()
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{}))
	net.Host(0).SlowGetRepo(20*time.Millisecond, 4<<10)
	if err := ix.Track(ctx, did); err != nil {
		t.Fatal(err)
	}
	for {
		r, err := ix.repos.Get(ctx, did)
		if err == nil && r.State == store.StateBackfilling && net.Host(0).Requests("com.atproto.sync.getRepo") > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The getRepo under way holds the state before this record.
	if _, err := a.CreateRecord("app.bsky.feed.post", testnet.Post("app.bsky.feed.post", "after the CAR")); err != nil {
		t.Fatal(err)
	}
	seq, err := a.EmitSync()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := net.Relay().Frame(seq)
	m, err := firehose.DecodeFrame(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.ing.HandleMessage(ctx, "test", m); err != nil {
		t.Fatal(err)
	}
	net.Host(0).SlowGetRepo(0, 0)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := ix.repos.Get(ctx, did)
		if err == nil && r.State == store.StateSynced && r.Rev == a.Rev() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("repo at %+v, PDS at rev %s", r, a.Rev())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, _ := ix.CountRecords(ctx, did, ""); n != 301 {
		t.Fatalf("%d records, want 301", n)
	}
}

// commitFrames makes n one-record commits on a and returns their firehose
// messages, as the relay framed them.
func commitFrames(t *testing.T, net *testnet.Network, a *testnet.Account, n int, rkey func(i int) string) []*firehose.Message {
	t.Helper()
	out := make([]*firehose.Message, 0, n)
	for i := range n {
		c, err := a.Apply(testnet.Create("app.bsky.feed.post", rkey(i), testnet.Post("app.bsky.feed.post", "pipelined")))
		if err != nil {
			t.Fatal(err)
		}
		raw, ok := net.Relay().Frame(c.Seq)
		if !ok {
			t.Fatalf("no frame %d", c.Seq)
		}
		m, err := firehose.DecodeFrame(raw)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestLive_PipelinesCommitsOfOneRepo: consecutive live commits of one repo
// do not each wait for their own transaction (and fsync): each is verified
// against the state the previous one leaves, and they share transactions.
// Anything else that acts on the repo (here a resync) first waits for them.
func TestLive_PipelinesCommitsOfOneRepo(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "pipe.test", testnet.Records("app.bsky.feed.post", 3))
	did := a.DID().String()
	ix, ctx, fs := runFailing(t, offlineConfig(t, net, filter.Spec{DIDs: []string{did}}))
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	msgs := commitFrames(t, net, a, 100, func(int) string { return "" })
	before := ix.w.Stats()

	// The store commits nothing until the gate opens. A commit that waited
	// for its own transaction would block the second one; pipelined, all
	// are verified and queued.
	gate := make(chan struct{})
	fs.gate.Store(&gate)
	handled := make(chan error, 1)
	go func() {
		for _, m := range msgs {
			if err := ix.ing.HandleMessage(ctx, "test", m); err != nil {
				handled <- err
				return
			}
		}
		handled <- nil
	}()
	select {
	case err := <-handled:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(gate)
		t.Fatal("live commits of one repo wait for each other's transactions: not pipelined")
	}
	close(gate)
	// Resync takes the repo's lock, which waits for the queued writes.
	if err := ix.Resync(ctx, did); err != nil {
		t.Fatal(err)
	}
	if txs := ix.w.Stats().Commits - before.Commits; txs > 10 {
		t.Fatalf("100 commits of one repo took %d transactions", txs)
	}
	if got := counterValue(t, ix, "cistern_commits_applied_total"); got != 100 {
		t.Fatalf("%v commits applied, want all 100 (none held or rejected)", got)
	}
	assertResynced(t, ctx, ix, a) // 103 records
}

// failingStore fails the write of one record key, and any repo-state write
// of one DID, as a full disk would, and can hold every write until a gate
// opens, as a stalled disk would. These can be changed while it runs.
type failingStore struct {
	store.Store
	failRKey atomic.Value                  // string
	failRepo atomic.Value                  // string: a DID
	gate     atomic.Pointer[chan struct{}] // when set, writes wait for it to close
}

func (s *failingStore) setFailRKey(rkey string) { s.failRKey.Store(rkey) }
func (s *failingStore) setFailRepo(did string)  { s.failRepo.Store(did) }

func (s *failingStore) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	if g := s.gate.Load(); g != nil {
		<-*g
	}
	rkey, _ := s.failRKey.Load().(string)
	did, _ := s.failRepo.Load().(string)
	return s.Store.Update(ctx, func(tx store.Tx) error { return fn(failingTx{tx, rkey, did}) })
}

type failingTx struct {
	store.Tx
	failRKey string
	failRepo string
}

func (tx failingTx) PutRecord(r *store.Record) error {
	if tx.failRKey != "" && r.RKey == tx.failRKey {
		return errors.New("injected: no space left on device")
	}
	return tx.Tx.PutRecord(r)
}

func (tx failingTx) PutRepo(r *store.Repo) error {
	if tx.failRepo != "" && r.DID == tx.failRepo {
		return errors.New("injected: no space left on device")
	}
	return tx.Tx.PutRepo(r)
}

// TestLive_FailedPipelinedWriteResyncs: when the store fails the write of a
// pipelined commit, the commits queued behind it are not applied on top of
// a state that was never stored; the repo is resynced and ends exactly at
// the PDS's state.
func TestLive_FailedPipelinedWriteResyncs(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "pipefail.test", testnet.Records("app.bsky.feed.post", 3))
	did := a.DID().String()
	ix, ctx, fs := runFailing(t, offlineConfig(t, net, filter.Spec{DIDs: []string{did}}))
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	fs.setFailRKey("3zzzzzzzzzz05")
	msgs := commitFrames(t, net, a, 20, func(i int) string { return fmt.Sprintf("3zzzzzzzzzz%02d", i) })
	for _, m := range msgs {
		if err := ix.ing.HandleMessage(ctx, "test", m); err != nil {
			t.Fatal(err)
		}
	}
	// The failure is noticed: a resync is under way.
	waitFor(t, 30*time.Second, func() string {
		if r, err := ix.repos.Get(ctx, did); err != nil || r.State == store.StateSynced {
			return fmt.Sprintf("repo still synced after a failed write (%v)", err)
		}
		return ""
	})
	fs.setFailRKey("")            // the disk has room again: the resync stores the record
	assertResynced(t, ctx, ix, a) // 23 records
	// The commits after the failed one were held for the resync, not
	// verified against the state the failure left (they would not chain).
	st, err := ix.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Rejected) != 0 {
		t.Fatalf("rejections %v after a store failure", st.Rejected)
	}
}

// frameAt decodes the relay's frame seq.
func frameAt(t *testing.T, net *testnet.Network, seq int64) *firehose.Message {
	t.Helper()
	raw, ok := net.Relay().Frame(seq)
	if !ok {
		t.Fatalf("no frame %d", seq)
	}
	m, err := firehose.DecodeFrame(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAccountDeletion_FinishedWhenTheMessageComesAgain: an account deletion
// marks the repo deleted before it removes the records (so that a backfill
// in flight stops writing), and sets the status last. If the process stops
// in between, the #account message comes again after the restart (the
// cursor is behind it): the deletion is finished, not skipped because the
// state already says deleted.
func TestAccountDeletion_FinishedWhenTheMessageComesAgain(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "gone.test", testnet.Records("app.bsky.feed.post", 30))
	did := a.DID().String()
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{DIDs: []string{did}}))
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	// What the first attempt left when the process stopped: state
	// deleted, status not yet set, records still there.
	if err := ix.write(ctx, func(tx store.Tx) error {
		r, err := tx.Repo(did)
		if err != nil {
			return err
		}
		next := *r
		next.State, next.Status = store.StateDeleted, ""
		return tx.PutRepo(&next)
	}); err != nil {
		t.Fatal(err)
	}
	seq, err := a.Delete()
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.ing.HandleMessage(ctx, "test", frameAt(t, net, seq)); err != nil {
		t.Fatal(err)
	}
	if n, err := ix.CountRecords(ctx, did, ""); err != nil || n != 0 {
		t.Fatalf("%d records left after the deletion came again (err %v)", n, err)
	}
	r, err := ix.repos.Get(ctx, did)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != store.StateDeleted || r.Status != "deleted" {
		t.Fatalf("repo %v %q, want deleted", r.State, r.Status)
	}
	// Once finished, the message again changes nothing and emits nothing.
	_, before, _ := ix.eventBounds(ctx)
	if err := ix.ing.HandleMessage(ctx, "test", frameAt(t, net, seq)); err != nil {
		t.Fatal(err)
	}
	if _, after, _ := ix.eventBounds(ctx); after != before {
		t.Fatalf("a repeated deletion emitted events %d..%d", before+1, after)
	}
}

// TestUntrack_FailedFetchDoesNotTrackAgain: a repo untracked while its
// backfill is fetching stays untracked when that fetch fails; the failure
// is not recorded on a repo that is no longer there.
func TestUntrack_FailedFetchDoesNotTrackAgain(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "dropped.test", testnet.Records("app.bsky.feed.post", 200))
	did := a.DID().String()
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{}))
	h := net.Host(0)
	h.SlowGetRepo(20*time.Millisecond, 2<<10)
	h.TruncateGetRepo(1, 16<<10)
	if err := ix.Track(ctx, did); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.Requests("com.atproto.sync.getRepo") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the backfill never fetched")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := ix.Untrack(ctx, did, false); err != nil {
		t.Fatal(err)
	}
	// The truncated transfer fails after ~160 ms; wait until the attempt,
	// failure handling included, is over.
	waitFor(t, 30*time.Second, func() string {
		if n := ix.bf.Stats().InFlight; n != 0 {
			return fmt.Sprintf("%d backfills still in flight", n)
		}
		return ""
	})
	if r, err := ix.Repo(ctx, did); !errors.Is(err, ErrNotTracked) {
		t.Fatalf("untracked repo is back after its fetch failed: %+v, %v", r, err)
	}
	st, err := ix.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Queued != 0 {
		t.Fatalf("%d repos queued after the untrack", st.Queued)
	}
}

// eventBounds reads the oldest and newest event ids.
func (ix *Indexer) eventBounds(ctx context.Context) (oldest, newest uint64, err error) {
	err = ix.st.View(ctx, func(tx store.ReadTx) error {
		oldest, newest, err = tx.EventBounds()
		return err
	})
	return oldest, newest, err
}

// TestUntrack_ExplicitDIDStaysUntracked: untracking a DID the filter lists
// removes it from the filter, so its next commit does not track it again.
func TestUntrack_ExplicitDIDStaysUntracked(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "listed.test", testnet.Records("app.bsky.feed.post", 3))
	did := a.DID().String()
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{DIDs: []string{did}}))
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	if err := ix.Untrack(ctx, did, true); err != nil {
		t.Fatal(err)
	}
	if ix.Filter().Explicit(did) {
		t.Fatal("the filter still lists the untracked DID")
	}
	msgs := commitFrames(t, net, a, 1, func(int) string { return "" })
	if err := ix.ing.HandleMessage(ctx, "test", msgs[0]); err != nil {
		t.Fatal(err)
	}
	if r, err := ix.Repo(ctx, did); !errors.Is(err, ErrNotTracked) {
		t.Fatalf("the next commit tracked the repo again: %+v, %v", r, err)
	}
}

// TestResync_EmitsAHandleChangeItMissed: a handle changed while no
// #identity was applied (missed, or failed) is noticed by the next backfill
// of the repo, which emits the identity event the live path would have.
func TestResync_EmitsAHandleChangeItMissed(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "before.test", testnet.Records("app.bsky.feed.post", 3))
	did := a.DID().String()
	ix, ctx := runOffline(t, offlineConfig(t, net, filter.Spec{DIDs: []string{did}}))
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	_, before, err := ix.eventBounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetHandle("after.test"); err != nil { // the #identity is never delivered
		t.Fatal(err)
	}
	if err := ix.res.Purge(ctx, a.DID()); err != nil {
		t.Fatal(err)
	}
	if err := ix.Resync(ctx, did); err != nil {
		t.Fatal(err)
	}
	if err := ix.WaitSynced(ctx, did); err != nil {
		t.Fatal(err)
	}
	var handles []string
	if err := ix.st.View(ctx, func(tx store.ReadTx) error {
		return tx.ScanEvents(before, func(ev *store.Event) (bool, error) {
			if ev.Kind == store.KindIdentity {
				handles = append(handles, ev.Handle)
			}
			return true, nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if len(handles) != 1 || handles[0] != "after.test" {
		t.Fatalf("identity events after the resync: %q, want [after.test]", handles)
	}
	if r, err := ix.Repo(ctx, did); err != nil || r.Handle != "after.test" {
		t.Fatalf("repo handle %q (%v)", r.Handle, err)
	}
}

// TestLive_CursorHeldWhileAFailedWriteIsNotResynced: a pipelined live write
// that the store fails is not waited for by its firehose handler, so the
// watermark moves past it. Until the repo's resync is durably queued, the
// saved cursor must not: a crash in between would leave the repo synced
// without the commit and the firehose past it.
func TestLive_CursorHeldWhileAFailedWriteIsNotResynced(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "failing.test", testnet.Records("app.bsky.feed.post", 3))
	b := net.Account(t, "fine.test", testnet.Records("app.bsky.feed.post", 3))
	cfg := offlineConfig(t, net, filter.Spec{DIDs: []string{a.DID().String(), b.DID().String()}})
	cfg.NoFirehose = false
	cfg.CursorInterval = 10 * time.Millisecond
	ix, ctx, fs := runFailing(t, cfg)
	for _, did := range []string{a.DID().String(), b.DID().String()} {
		if err := ix.WaitSynced(ctx, did); err != nil {
			t.Fatal(err)
		}
	}
	cursor := func() int64 {
		var c int64
		if err := ix.st.View(ctx, func(tx store.ReadTx) error {
			v, err := tx.Meta(ingest.MetaCursorPrefix + net.RelayURL())
			if err == nil {
				c, err = strconv.ParseInt(string(v), 10, 64)
			}
			return err
		}); err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		return c
	}

	// The disk fills up for a's record and for any write of a's state, so
	// the resync cannot be queued either.
	fs.setFailRKey("3zzzzzzzzzzaa")
	fs.setFailRepo(a.DID().String())
	failed, err := a.Apply(testnet.Create("app.bsky.feed.post", "3zzzzzzzzzzaa", testnet.Post("app.bsky.feed.post", "lost?")))
	if err != nil {
		t.Fatal(err)
	}
	// Other repos go on; their commits are applied, but the cursor stays
	// behind the failed commit.
	var last int64
	for i := range 5 {
		c, err := b.Apply(testnet.Create("app.bsky.feed.post", "", testnet.Post("app.bsky.feed.post", fmt.Sprint("fine ", i))))
		if err != nil {
			t.Fatal(err)
		}
		last = c.Seq
	}
	waitFor(t, 10*time.Second, func() string {
		if r, err := ix.repos.Get(ctx, b.DID().String()); err != nil || r.Rev != b.Rev() {
			return fmt.Sprintf("the other repo's commits were not applied (%v)", err)
		}
		if !ix.pipe.Broken(a.DID().String()) {
			return "the failed write was never reported"
		}
		return ""
	})
	time.Sleep(100 * time.Millisecond) // ten cursor intervals
	if c := cursor(); c >= failed.Seq {
		t.Fatalf("cursor saved at %d, past the failed commit %d, before its repo was queued for a resync", c, failed.Seq)
	}
	// The failing repo's next commit does not chain to what is stored: it
	// is held for the resync, not rejected.
	next, err := a.Apply(testnet.Create("app.bsky.feed.post", "3zzzzzzzzzzab", testnet.Post("app.bsky.feed.post", "after")))
	if err != nil {
		t.Fatal(err)
	}
	last = next.Seq

	// Room again: the resync is queued, the cursor moves on, the repo
	// converges to the PDS.
	fs.setFailRKey("")
	fs.setFailRepo("")
	waitFor(t, 10*time.Second, func() string {
		if c := cursor(); c < last {
			return fmt.Sprintf("cursor %d never reached %d after the resync was queued", c, last)
		}
		return ""
	})
	assertResynced(t, ctx, ix, a)
	for _, rkey := range []string{"3zzzzzzzzzzaa", "3zzzzzzzzzzab"} {
		if _, err := ix.GetRecord(ctx, a.DID().String(), "app.bsky.feed.post", rkey); err != nil {
			t.Fatalf("record %s after the resync: %v", rkey, err)
		}
	}
	st, err := ix.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Rejected) != 0 {
		t.Fatalf("rejections %v: a commit after the failed write was verified against the stale state", st.Rejected)
	}
}

// counterValue returns the value of a counter of the Indexer's metrics.
func counterValue(t *testing.T, ix *Indexer, name string) float64 {
	t.Helper()
	mfs, err := ix.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}
