package stream_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/stream"
)

func TestConsumer_ResumesAfterReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cistern.db")
	st, err := boltstore.Open(path, &boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	l := stream.New(st, stream.Options{})
	appendPosts(t, st, l, 10)

	sub, err := l.Subscribe(ctx, stream.SubscribeOptions{Name: "indexer-a", Cursor: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(t, sub, 7); !slices.Equal(got, seq(3, 7)) {
		t.Fatalf("first run: got %v, want 3..7", got)
	}
	if err := sub.Ack(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if err := sub.Ack(ctx, 5); err != nil { // backwards: ignored
		t.Fatal(err)
	}
	if err := sub.Ack(ctx, 11); !errors.Is(err, stream.ErrFutureCursor) {
		t.Fatalf("Ack beyond delivered: %v, want ErrFutureCursor", err)
	}
	if _, err := l.Subscribe(ctx, stream.SubscribeOptions{Name: "indexer-a"}); !errors.Is(err, stream.ErrConsumerBusy) {
		t.Fatalf("second subscription under the same name: %v, want ErrConsumerBusy", err)
	}
	if err := l.DeleteConsumer(ctx, "indexer-a"); !errors.Is(err, stream.ErrConsumerBusy) {
		t.Fatalf("DeleteConsumer while subscribed: %v, want ErrConsumerBusy", err)
	}
	sub.Close()
	l.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = openStore(t, path)
	l = newLog(t, st, stream.Options{})
	appendPosts(t, st, l, 3)
	c, err := l.Consumer(ctx, "indexer-a")
	if err != nil || c.Acked != 7 {
		t.Fatalf("Consumer = %+v, %v; want Acked 7", c, err)
	}
	// The stored ack wins over Cursor.
	sub, err = l.Subscribe(ctx, stream.SubscribeOptions{Name: "indexer-a", Cursor: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(t, sub, 13); !slices.Equal(got, seq(8, 13)) {
		t.Fatalf("after reopen: got %v, want 8..13", got)
	}
	if err := sub.Ack(ctx, 13); err != nil {
		t.Fatal(err)
	}
	sub.Close()

	other, err := l.Subscribe(ctx, stream.SubscribeOptions{Name: "b", Cursor: 12})
	if err != nil {
		t.Fatal(err)
	}
	collect(t, other, 13)
	if err := other.Ack(ctx, 12); err != nil {
		t.Fatal(err)
	}
	other.Close()

	cs, err := l.Consumers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].Name != "b" || cs[0].Acked != 12 || cs[1].Name != "indexer-a" || cs[1].Acked != 13 {
		t.Fatalf("Consumers = %+v", cs)
	}
	if err := l.DeleteConsumer(ctx, "indexer-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Consumer(ctx, "indexer-a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Consumer after delete: %v, want ErrNotFound", err)
	}
	if cs, _ := l.Consumers(ctx); len(cs) != 1 || cs[0].Name != "b" {
		t.Fatalf("Consumers after delete = %+v", cs)
	}
	// Without a stored ack, Cursor applies again.
	sub, err = l.Subscribe(ctx, stream.SubscribeOptions{Name: "indexer-a", Cursor: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if sub.Start() != 11 {
		t.Fatalf("Start after delete = %d, want 11", sub.Start())
	}
}

func TestAck_NotDurable(t *testing.T) {
	st := openStore(t, "")
	l := newLog(t, st, stream.Options{})
	sub, err := l.Subscribe(context.Background(), stream.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Ack(context.Background(), 0); !errors.Is(err, stream.ErrNotDurable) {
		t.Fatalf("Ack = %v, want ErrNotDurable", err)
	}
}
