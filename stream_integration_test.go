package cistern_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cistern-dev/cistern"
	"github.com/cistern-dev/cistern/filter"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
	"github.com/cistern-dev/cistern/testnet"
	"github.com/ipfs/go-cid"
)

// receive reads n events from sub, failing after a timeout.
func receive(t testing.TB, sub *stream.Subscription, n int) []*store.Event {
	t.Helper()
	var out []*store.Event
	timeout := time.After(20 * time.Second)
	for len(out) < n {
		select {
		case ev, ok := <-sub.Events():
			if !ok {
				t.Fatalf("subscription ended after %d of %d events: %v", len(out), n, sub.Err())
			}
			out = append(out, ev)
		case <-timeout:
			t.Fatalf("received %d of %d events", len(out), n)
		}
	}
	return out
}

func TestIndexer_DurableConsumerResumesAfterRestart(t *testing.T) {
	net := testnet.New(t)
	alice := net.Account(t, "alice.test", testnet.Records(post, 30))
	did := alice.DID().String()
	cfg := testConfig(t, net, filter.Spec{DIDs: []string{did}})
	ctx := context.Background()

	ix, err := cistern.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ix.Run(runCtx) }()
	waitSynced(t, ix, did)
	total := newestEvent(t, ix)
	if total < 30 {
		t.Fatalf("%d events after the backfill, want at least 30", total)
	}

	// Read 12 events, acknowledge the 10th, then go away.
	sub, err := ix.Subscribe(ctx, stream.SubscribeOptions{Name: "app"})
	if err != nil {
		t.Fatal(err)
	}
	got := receive(t, sub, 12)
	for i, ev := range got {
		if ev.ID != uint64(i+1) {
			t.Fatalf("event %d has id %d", i, ev.ID)
		}
	}
	if err := sub.Ack(ctx, got[9].ID); err != nil {
		t.Fatal(err)
	}
	// A second subscription under the name is refused while the first runs.
	if _, err := ix.Subscribe(ctx, stream.SubscribeOptions{Name: "app"}); !errors.Is(err, stream.ErrConsumerBusy) {
		t.Fatalf("a second subscription under the name = %v, want ErrConsumerBusy", err)
	}
	sub.Close()
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen on the same file; more happens meanwhile.
	eventually(t, 10*time.Second, func() string {
		if net.Relay().Connections() != 0 {
			return "the relay still counts the closed firehose connection"
		}
		return ""
	})
	ix = runConnected(t, net, cfg)
	if c, err := ix.Consumer(ctx, "app"); err != nil || c.Acked != got[9].ID {
		t.Fatalf("consumer after reopen: %+v, %v; want acked %d", c, err, got[9].ID)
	}
	after, err := alice.CreateRecord(post, testnet.Post(post, "after the restart"))
	if err != nil {
		t.Fatal(err)
	}
	assertConverged(t, ix, alice)
	newest := newestEvent(t, ix)

	// The cursor of the options is ignored once something was acked:
	// delivery resumes right after the acked id, through to the new events.
	sub, err = ix.Subscribe(ctx, stream.SubscribeOptions{Name: "app", Cursor: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	rest := receive(t, sub, int(newest-got[9].ID))
	for i, ev := range rest {
		if want := got[9].ID + uint64(i) + 1; ev.ID != want {
			t.Fatalf("after the restart, event %d has id %d, want %d", i, ev.ID, want)
		}
	}
	// The new record's create comes last: live, or from the resync a
	// restart without a firehose cursor runs, if that fetched the repo
	// after the write (the live commit is then skipped as already held).
	if last := rest[len(rest)-1]; last.Action != store.ActionCreate || last.RKey != after.RKey {
		t.Fatalf("last event %+v, want the create of %s", last, after.RKey)
	}
	// Nothing more than the log holds.
	select {
	case ev := <-sub.Events():
		t.Fatalf("unexpected event %d", ev.ID)
	case <-time.After(100 * time.Millisecond):
	}

	// An anonymous subscription is not durable.
	anon, err := ix.Subscribe(ctx, stream.SubscribeOptions{Cursor: newest - 1})
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if ev := receive(t, anon, 1)[0]; ev.ID != newest {
		t.Fatalf("anonymous subscription from %d starts at %d", newest-1, ev.ID)
	}
	if err := anon.Ack(ctx, newest); !errors.Is(err, stream.ErrNotDurable) {
		t.Fatalf("Ack on an anonymous subscription = %v, want ErrNotDurable", err)
	}
}

// TestRetention_ThroughTheIndexer: Config.Retention bounds the event log of
// a running Indexer. Pruning keeps every value a stored record holds (its
// create event is gone, the record still reads back exactly), and reclaims
// the values only pruned events referred to (the old values of updated
// records).
func TestRetention_ThroughTheIndexer(t *testing.T) {
	net := testnet.New(t)
	a := net.Account(t, "kept.test", testnet.Records(post, 300))
	did := a.DID().String()
	cfg := testConfig(t, net, filter.Spec{DIDs: []string{did}})
	cfg.Retention = cistern.Retention{MaxEvents: 100}
	ix := runIndexer(t, cfg)
	waitSynced(t, ix, did)
	recs := a.Records()
	for i := range 50 {
		r := recs[i*6]
		if _, err := a.PutRecord(r.Collection, r.RKey, testnet.Post(post, fmt.Sprintf("edited %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	assertConverged(t, ix, a)
	ctx := context.Background()
	if _, err := ix.Prune(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := ix.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Events > 100 || st.OldestEvent <= st.NewestEvent-100 {
		t.Fatalf("%d events retained (ids %d..%d), want at most the newest 100", st.Events, st.OldestEvent, st.NewestEvent)
	}
	for _, r := range a.Records() {
		got, err := ix.GetRecord(ctx, did, r.Collection, r.RKey)
		if err != nil {
			t.Fatalf("%s/%s after pruning: %v", r.Collection, r.RKey, err)
		}
		if got.CID != r.CID || !bytes.Equal(got.Value, r.Value) {
			t.Fatalf("%s/%s after pruning: cid %s, want %s (value equal: %v)", r.Collection, r.RKey, got.CID, r.CID, bytes.Equal(got.Value, r.Value))
		}
	}
	// The store holds the records' values plus the old values that
	// retained events still name (creates of records updated since); the
	// other replaced values went with their events.
	current := map[string]bool{}
	for _, r := range a.Records() {
		current[r.CID.String()] = true
	}
	old := map[string]bool{}
	if err := ix.Store().View(ctx, func(tx store.ReadTx) error {
		return tx.ScanEvents(0, func(ev *store.Event) (bool, error) {
			if c, err := cid.Cast(ev.CID); err == nil && !current[c.String()] {
				old[c.String()] = true
			}
			return true, nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if want := int64(len(current) + len(old)); st.Blocks != want || len(old) >= 50 {
		t.Fatalf("%d values stored, want %d (%d records, %d old values named by retained events)", st.Blocks, want, len(current), len(old))
	}
}
