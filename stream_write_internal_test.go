package cistern

import (
	"context"
	"testing"

	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/stream"
	"github.com/cistern-dev/cistern/testnet"
)

// The event log's own writes (a durable consumer's ack and deletion, a
// prune) go through the Indexer's one write path, the group-commit writer,
// not beside it.
func TestStream_WritesGoThroughTheWriter(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "acks.test", testnet.Records(testPost, 3))
	cfg := offlineConfig(t, net, filter.Spec{DIDs: []string{a.DID().String()}, Collections: []string{testPost}})
	cfg.Retention.MaxEvents = 1
	ix, ctx := runOffline(t, cfg)
	if err := ix.WaitSynced(ctx, a.DID().String()); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub, err := ix.Subscribe(sctx, stream.SubscribeOptions{Name: "reader"})
	if err != nil {
		t.Fatal(err)
	}
	ev := <-sub.Events()

	for _, step := range []struct {
		name string
		do   func() error
	}{
		{"ack", func() error { return sub.Ack(ctx, ev.ID) }},
		{"prune", func() error {
			n, err := ix.Prune(ctx)
			if err == nil && n == 0 {
				t.Error("prune removed nothing")
			}
			return err
		}},
		{"delete consumer", func() error {
			cancel()
			for range sub.Events() {
			}
			return ix.DeleteConsumer(ctx, "reader")
		}},
	} {
		before := ix.w.Stats().Writes
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if after := ix.w.Stats().Writes; after == before {
			t.Errorf("%s wrote beside the writer (its writes %d before and after)", step.name, after)
		}
	}
}
