package stream_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// linkEvent is a create event of a record whose value is m.
func linkEvent(i int, did, collection string, m map[string]any) *store.Event {
	v, err := encMode.Marshal(m)
	if err != nil {
		panic(err)
	}
	_, c := post(fmt.Sprint("link ", i))
	return &store.Event{Kind: store.KindRecord, Live: true, DID: did, Rev: fmt.Sprintf("3l%011d", i), Time: t0,
		Collection: collection, RKey: fmt.Sprintf("3k%011d", i), Action: store.ActionCreate, CID: c, Record: v}
}

func TestSubscribe_LinksTo(t *testing.T) {
	st := openStore(t, "")
	l := newLog(t, st, stream.Options{PageSize: 3})
	alice := "did:plc:alice"
	myPost := "at://" + alice + "/app.bsky.feed.post/3kmine"
	other := "at://did:plc:bob/app.bsky.feed.post/3kother"
	ref := func(uri string) map[string]any { return map[string]any{"uri": uri, "cid": "bafyrei"} }
	newest := appendEvents(t, st, l,
		linkEvent(1, "did:plc:bob", "app.bsky.feed.like", map[string]any{"subject": ref(myPost)}),                                                               // 1
		linkEvent(2, "did:plc:bob", "app.bsky.feed.like", map[string]any{"subject": ref(other)}),                                                                // 2
		linkEvent(3, "did:plc:carol", "app.bsky.feed.repost", map[string]any{"subject": ref(myPost)}),                                                           // 3
		linkEvent(4, "did:plc:carol", "app.bsky.graph.follow", map[string]any{"subject": alice}),                                                                // 4
		linkEvent(5, "did:plc:dan", "app.bsky.feed.post", map[string]any{"reply": map[string]any{"root": ref(myPost), "parent": ref(other)}}),                   // 5
		&store.Event{Kind: store.KindIdentity, DID: alice, Handle: "alice.test", Time: t0, Live: true},                                                          // 6
		&store.Event{Kind: store.KindRecord, DID: "did:plc:bob", Collection: "app.bsky.feed.like", RKey: "x", Action: store.ActionDelete, Time: t0, Live: true}, // 7
		recordEvent(8, alice, "app.bsky.feed.post", true),                                                                                                       // 8
	)
	for _, tt := range []struct {
		name string
		opts stream.SubscribeOptions
		want []uint64
	}{
		{"likes, reposts and replies of my post", stream.SubscribeOptions{LinksTo: []string{myPost}}, []uint64{1, 3, 5}},
		{"likes of my post", stream.SubscribeOptions{LinksTo: []string{myPost}, Collections: []string{"app.bsky.feed.like"}}, []uint64{1}},
		{"follows of me or links to the other post", stream.SubscribeOptions{LinksTo: []string{alice, other}}, []uint64{2, 4, 5}},
		{"nothing links here", stream.SubscribeOptions{LinksTo: []string{"did:plc:nobody"}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := l.Subscribe(context.Background(), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			if got := ids(drain(t, sub, newest)); !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	for _, bad := range []string{"", "https://example.com", "did:plc", "at://did:plc:x/not an nsid"} {
		if _, err := l.Subscribe(context.Background(), stream.SubscribeOptions{LinksTo: []string{bad}}); !errors.Is(err, stream.ErrInvalidOptions) {
			t.Errorf("LinksTo %q: %v, want ErrInvalidOptions", bad, err)
		}
	}
}
