package cistern

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/testnet"
)

// offlineConfig is a config on net that follows no firehose and crawls
// nothing, so that a test feeds the indexer what it wants, when it wants.
func offlineConfig(t *testing.T, net *testnet.Network, spec filter.Spec) Config {
	return Config{
		Path: t.TempDir() + "/c.db", RelayURL: net.RelayURL(), PLCURL: net.PLCURL(),
		SkipHandleVerification: true, NoFirehose: true, NoCrawl: true,
		Filter:   spec,
		Backfill: BackfillConfig{MinBackoff: 20 * time.Millisecond},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// runOffline opens an Indexer with cfg and runs it until the test ends; the
// context returned ends then too.
func runOffline(t *testing.T, cfg Config) (*Indexer, context.Context) {
	t.Helper()
	ix, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); ix.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; ix.Close() })
	return ix, ctx
}

// rejectedAs returns how many live commits ix has counted as rejected for
// reason.
func rejectedAs(t *testing.T, ctx context.Context, ix *Indexer, reason RejectReason) int64 {
	t.Helper()
	st, err := ix.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.Rejected[reason]
}

// assertRejected checks that err (from handleMessage) is a rejection for
// reason, counted once more than before, and that a's repo was resynced.
func assertRejected(t *testing.T, ctx context.Context, ix *Indexer, a *testnet.Account, err error, reason RejectReason, before int64) {
	t.Helper()
	var ce *CommitError
	if !errors.As(err, &ce) || ce.Reason != reason {
		t.Fatalf("handleMessage = %v; want a %s rejection", err, reason)
	}
	if n := rejectedAs(t, ctx, ix, reason); n != before+1 {
		t.Fatalf("%d rejections counted as %s, want %d", n, reason, before+1)
	}
	assertResynced(t, ctx, ix, a)
}

// assertResynced waits until the repo is synced again and checks that it
// holds the PDS's state.
func assertResynced(t *testing.T, ctx context.Context, ix *Indexer, a *testnet.Account) {
	t.Helper()
	did := a.DID().String()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := ix.WaitSynced(wctx, did); err != nil {
		t.Fatal(err)
	}
	r, err := ix.repos.Get(ctx, did)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rev != a.Rev() || r.Data != a.DataCID().String() {
		t.Fatalf("repo at %s %s after the resync, PDS at %s %s", r.Rev, r.Data, a.Rev(), a.DataCID())
	}
	if n, err := ix.CountRecords(ctx, did, ""); err != nil || n != int64(a.Len()) {
		t.Fatalf("CountRecords = %d, %v; PDS has %d", n, err, a.Len())
	}
}

// waitFor polls cond until it returns "" and fails the test with its last
// answer if that takes longer than timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runFailing runs an Indexer with cfg over the store at cfg.Path wrapped in
// a failingStore, which it returns for the test to steer.
func runFailing(t *testing.T, cfg Config) (*Indexer, context.Context, *failingStore) {
	t.Helper()
	db, err := boltstore.Open(cfg.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	fs := &failingStore{Store: db}
	cfg.Store = fs
	ix, ctx := runOffline(t, cfg)
	return ix, ctx, fs
}
