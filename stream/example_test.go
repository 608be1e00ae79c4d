package stream_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/store/boltstore"
	"github.com/cistern-dev/cistern/stream"
)

// exampleStore opens a store in a temporary directory with three events:
// two posts and an identity change.
func exampleStore() (*boltstore.DB, func()) {
	dir, err := os.MkdirTemp("", "cistern-example")
	if err != nil {
		panic(err)
	}
	st, err := boltstore.Open(filepath.Join(dir, "cistern.db"), &boltstore.Options{NoSync: true})
	if err != nil {
		panic(err)
	}
	err = st.Update(context.Background(), func(tx store.Tx) error {
		for i, ev := range []*store.Event{
			recordEvent(1, "did:plc:alice", "app.bsky.feed.post", false),
			{Kind: store.KindIdentity, DID: "did:plc:alice", Handle: "alice.test", Time: t0, Live: true},
			recordEvent(2, "did:plc:alice", "app.bsky.feed.post", true),
		} {
			ev.Time = t0.Add(time.Duration(i) * time.Second)
			if err := tx.AppendEvent(ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	return st, func() { st.Close(); os.RemoveAll(dir) }
}

func ExampleLog_Subscribe() {
	st, cleanup := exampleStore()
	defer cleanup()
	l := stream.New(st, stream.Options{})
	defer l.Close()

	// Replay everything after event 1, then follow live events.
	sub, err := l.Subscribe(context.Background(), stream.SubscribeOptions{Cursor: 1})
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	for ev := range sub.Events() {
		fmt.Println(ev.ID, ev.Kind, ev.DID)
		if ev.ID == 3 {
			break
		}
	}
	// Output:
	// 2 identity did:plc:alice
	// 3 record did:plc:alice
}

func ExampleLog_Subscribe_filtered() {
	st, cleanup := exampleStore()
	defer cleanup()
	l := stream.New(st, stream.Options{})
	defer l.Close()

	// Only live record events in app.bsky.feed.*; the others still advance
	// the subscription's position.
	sub, err := l.Subscribe(context.Background(), stream.SubscribeOptions{
		Collections: []string{"app.bsky.feed.*"},
		Kinds:       []store.EventKind{store.KindRecord},
		Origin:      stream.LiveOnly,
	})
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	ev := <-sub.Events()
	b, _ := stream.EventJSON(ev)
	fmt.Println(ev.ID, string(b[:60]))
	// Output:
	// 3 {"id":3,"type":"record","record":{"live":true,"did":"did:plc
}

func ExampleLog_Subscribe_durable() {
	st, cleanup := exampleStore()
	defer cleanup()
	l := stream.New(st, stream.Options{})
	defer l.Close()
	ctx := context.Background()

	// A named consumer resumes after its last acknowledged event.
	sub, err := l.Subscribe(ctx, stream.SubscribeOptions{Name: "mailer"})
	if err != nil {
		panic(err)
	}
	ev := <-sub.Events()
	if err := sub.Ack(ctx, ev.ID); err != nil {
		panic(err)
	}
	sub.Close()

	sub, err = l.Subscribe(ctx, stream.SubscribeOptions{Name: "mailer"})
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	fmt.Println("resumed after", sub.Start(), "next", (<-sub.Events()).ID)
	// Output:
	// resumed after 1 next 2
}

func ExampleLog_Subscribe_outdatedCursor() {
	st, cleanup := exampleStore()
	defer cleanup()
	l := stream.New(st, stream.Options{MaxEvents: 1})
	defer l.Close()
	ctx := context.Background()
	if _, err := l.Prune(ctx); err != nil {
		panic(err)
	}

	_, err := l.Subscribe(ctx, stream.SubscribeOptions{Cursor: 1})
	fmt.Println(errors.Is(err, stream.ErrOutdatedCursor))

	sub, err := l.Subscribe(ctx, stream.SubscribeOptions{Cursor: 1, FromOldest: true})
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	n := <-sub.Notices()
	fmt.Println(n.Name, "resuming at", n.Oldest)
	fmt.Println((<-sub.Events()).ID)
	// Output:
	// true
	// OutdatedCursor resuming at 3
	// 3
}
