package cistern

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/filter"
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
