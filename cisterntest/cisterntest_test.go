package cisterntest_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/cisterntest"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/testnet"
)

func run(t *testing.T, cfg cistern.Config) *cistern.Indexer {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	ix, err := cistern.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ix.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = ix.Close()
	})
	return ix
}

// One call is enough: the indexer backfills from the network, follows its
// firehose and reads the accounts' handles (not handle.invalid).
func TestConfig_FollowsTheNetwork(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records("app.bsky.feed.post", 5))
	cfg := cisterntest.Config(net, filepath.Join(t.TempDir(), "c.db"))
	cfg.Filter = filter.Spec{DIDs: []string{alice.DID().String()}}
	ix := run(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ix.WaitSynced(ctx, alice.DID().String()); err != nil {
		t.Fatal(err)
	}
	r, err := ix.Repo(ctx, alice.DID().String())
	if err != nil {
		t.Fatal(err)
	}
	if r.Handle != "alice.test" || r.Records != 5 {
		t.Fatalf("repo handle %q with %d records; want alice.test with 5", r.Handle, r.Records)
	}
	for net.Relay().Connections() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := alice.CreateRecord("app.bsky.feed.post", testnet.Post("app.bsky.feed.post", "live")); err != nil {
		t.Fatal(err)
	}
	for {
		if n, _ := ix.CountRecords(ctx, alice.DID().String(), ""); n == 6 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the live record never arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A URL left to its production default fails at once and says so, instead
// of dialing production.
func TestConfig_ProductionDefaultFailsFast(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records("app.bsky.feed.post", 2))
	cfg := cisterntest.Config(net, filepath.Join(t.TempDir(), "c.db"))
	cfg.PLCURL = "" // https://plc.directory
	cfg.Filter = filter.Spec{DIDs: []string{alice.DID().String()}}
	ix := run(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := ix.WaitSynced(ctx, alice.DID().String())
	var re *cistern.RepoError
	if !errors.As(err, &re) || re.State != store.StateError {
		t.Fatalf("WaitSynced = %v; want the repo in error", err)
	}
	if !strings.Contains(re.Reason, testnet.ErrOutsideNetwork.Error()) || !strings.Contains(re.Reason, "plc.directory") {
		t.Fatalf("the error %q does not say that plc.directory is outside the network", re.Reason)
	}
}
