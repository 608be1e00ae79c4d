package cistern_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/internal/logcheck"
	"github.com/cistern-dev/cistern/testnet"
)

func testLogger() *slog.Logger {
	if os.Getenv("CISTERN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testConfig is an Indexer config pointed at a testnet, with fast retries.
func testConfig(t testing.TB, net *testnet.Network, spec filter.Spec) cistern.Config {
	return cistern.Config{
		Path:                   t.TempDir() + "/cistern.db",
		RelayURL:               net.RelayURL(),
		PLCURL:                 net.PLCURL(),
		SkipHandleVerification: true,
		Filter:                 spec,
		NoCrawl:                true,
		CursorInterval:         20 * time.Millisecond,
		Backfill: cistern.BackfillConfig{
			MinBackoff: 20 * time.Millisecond,
			MaxBackoff: 200 * time.Millisecond,
		},
		Logger: testLogger(),
	}
}

// runIndexer opens an Indexer with cfg and runs it until the test ends.
func runIndexer(t testing.TB, cfg cistern.Config) *cistern.Indexer {
	t.Helper()
	ix, err := cistern.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := ix.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return ix
}

func waitSynced(t testing.TB, ix *cistern.Indexer, dids ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, did := range dids {
		if err := ix.WaitSynced(ctx, did); err != nil {
			t.Fatalf("WaitSynced(%s): %v", did, err)
		}
	}
}

// want returns the records of acct that f stores, as path -> CID.
func want(acct *testnet.Account, f *filter.Filter) map[string]string {
	return logcheck.Want(acct, f.Stores)
}

// stored returns the records the indexer holds for did, as path -> CID.
func stored(t testing.TB, ix *cistern.Indexer, did string) map[string]string {
	t.Helper()
	out, err := logcheck.Records(context.Background(), ix.Store(), did)
	if err != nil {
		t.Fatalf("stored records: %v", err)
	}
	return out
}

// folded folds the whole event log in id order into did -> path -> CID
// (logcheck.Fold: no doubled or lost event), checking too that the ids of
// the retained log are contiguous.
func folded(t testing.TB, ix *cistern.Indexer) map[string]map[string]string {
	t.Helper()
	evs, err := logcheck.Events(context.Background(), ix.Store(), 0)
	if err != nil {
		t.Fatalf("read events: %v", err)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].ID != evs[i-1].ID+1 {
			t.Fatalf("event ids jump from %d to %d", evs[i-1].ID, evs[i].ID)
		}
	}
	out, err := logcheck.Fold(evs)
	if err != nil {
		t.Fatalf("fold events: %v", err)
	}
	return out
}

func diffMaps(got, want map[string]string) string { return logcheck.Diff(got, want) }

// eventually polls cond until it returns "" or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not converged after %s: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertConverged waits until, for every account, the stored records and
// the folded event log equal the PDS's records of the stored collections.
func assertConverged(t testing.TB, ix *cistern.Indexer, accts ...*testnet.Account) {
	t.Helper()
	f := ix.Filter()
	eventually(t, 60*time.Second, func() string {
		for _, a := range accts {
			w := want(a, f)
			if d := diffMaps(stored(t, ix, a.DID().String()), w); d != "" {
				return fmt.Sprintf("stored records of %s: %s", a.Handle(), d)
			}
		}
		return ""
	})
	fold := folded(t, ix)
	for _, a := range accts {
		if d := diffMaps(fold[a.DID().String()], want(a, f)); d != "" {
			t.Fatalf("folded events of %s: %s", a.Handle(), d)
		}
	}
}

func mustCompile(t testing.TB, spec filter.Spec) *filter.Filter {
	t.Helper()
	f, err := filter.Compile(spec)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// runConnected runs an Indexer and waits until its firehose is connected
// to the testnet relay, so that what the test writes next is seen live.
func runConnected(t testing.TB, net *testnet.Network, cfg cistern.Config) *cistern.Indexer {
	t.Helper()
	before := net.Relay().Connections()
	ix := runIndexer(t, cfg)
	eventually(t, 10*time.Second, func() string {
		if net.Relay().Connections() <= before {
			return "firehose not connected"
		}
		return ""
	})
	return ix
}
