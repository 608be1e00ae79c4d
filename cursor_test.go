package cistern_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/testnet"
)

// SetCursor places where the next Run resumes a source: set before the
// first Run, the firehose replays the messages after it (here a repo that
// wrote before the indexer started is discovered from them, with no
// crawl), where a first Run without a cursor would start live.
func TestSetCursor_RunResumesAfterIt(t *testing.T) {
	ctx := context.Background()
	net := testnet.New(t)
	a := net.Account(t, "early.test", testnet.Records(post, 3))
	cfg := testConfig(t, net, filter.Spec{FullNetwork: true, Collections: []string{post}})
	ix, err := cistern.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []int64{-1} {
		if err := ix.SetCursor(ctx, net.RelayURL(), c); !errors.Is(err, cistern.ErrInvalidArgument) {
			t.Errorf("SetCursor(%d) = %v; want ErrInvalidArgument", c, err)
		}
	}
	if err := ix.SetCursor(ctx, net.RelayURL(), 1); err != nil {
		t.Fatal(err)
	}
	if c, err := ix.Cursor(ctx, net.RelayURL()); c != 1 || err != nil {
		t.Fatalf("Cursor = %d, %v; want 1", c, err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ix.Run(runCtx) }()
	defer func() {
		cancel()
		<-done
		if err := ix.Close(); err != nil {
			t.Error(err)
		}
		if err := ix.SetCursor(ctx, net.RelayURL(), 1); !errors.Is(err, cistern.ErrClosed) {
			t.Errorf("SetCursor after Close = %v; want ErrClosed", err)
		}
	}()
	eventually(t, 30*time.Second, func() string {
		if _, err := ix.Repo(ctx, a.DID().String()); err != nil {
			return "the repo that wrote before Run is not tracked: " + err.Error()
		}
		return ""
	})
	waitSynced(t, ix, a.DID().String())
	assertConverged(t, ix, a)
	eventually(t, 30*time.Second, func() string {
		if err := ix.SetCursor(ctx, net.RelayURL(), 1); !errors.Is(err, cistern.ErrRunning) {
			return "SetCursor while Run runs did not return ErrRunning"
		}
		return ""
	})
	if c, err := ix.Cursor(ctx, net.RelayURL()); c <= 1 || err != nil {
		t.Fatalf("Cursor after the replay = %d, %v; want past 1", c, err)
	}
}
