package cistern

import (
	"testing"
	"time"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/firehose"
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
		r, err := ix.repo(ctx, did)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// A #sync of the state we hold: nothing to do.
	if err := ix.handleMessage(ctx, "test", syncFrame()); err != nil {
		t.Fatal(err)
	}
	if r := state(); r.State != store.StateSynced {
		t.Fatalf("state %v after a #sync of the same data", r.State)
	}

	// The repo changes without us seeing the commit; a #sync announces it.
	if _, err := a.CreateRecord("app.bsky.feed.post", testnet.Post("app.bsky.feed.post", "unseen")); err != nil {
		t.Fatal(err)
	}
	if err := ix.handleMessage(ctx, "test", syncFrame()); err != nil {
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
		r, err := ix.repo(ctx, did)
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
	if err := ix.handleMessage(ctx, "test", m); err != nil {
		t.Fatal(err)
	}
	net.Host(0).SlowGetRepo(0, 0)
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := ix.repo(ctx, did)
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
