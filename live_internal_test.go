package cistern

import (
	"context"
	"io"
	"log/slog"
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
	ix, err := Open(Config{
		Path: t.TempDir() + "/c.db", RelayURL: net.RelayURL(), PLCURL: net.PLCURL(),
		SkipHandleVerification: true, NoFirehose: true, NoCrawl: true,
		Filter:   filter.Spec{DIDs: []string{did}},
		Backfill: BackfillConfig{MinBackoff: 20 * time.Millisecond},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ix.Run(ctx)
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
