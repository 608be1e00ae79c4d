package stream_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

func TestSubscribe_ReplayThenLive(t *testing.T) {
	st := openStore(t, "")
	l := newLog(t, st, stream.Options{PageSize: 3, Buffer: 2})
	appendPosts(t, st, l, 10)

	sub, err := l.Subscribe(context.Background(), stream.SubscribeOptions{Cursor: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if got := collect(t, sub, 10); !slices.Equal(got, seq(5, 10)) {
		t.Fatalf("replay: got %v, want 5..10", got)
	}
	appendPosts(t, st, l, 3)
	appendPosts(t, st, l, 2)
	if got := collect(t, sub, 15); !slices.Equal(got, seq(11, 15)) {
		t.Fatalf("live: got %v, want 11..15", got)
	}
	sub.Close()
	if err := sub.Err(); err != nil {
		t.Fatalf("Err after Close = %v, want nil", err)
	}
	if _, ok := <-sub.Events(); ok {
		t.Fatal("Events not closed after Close")
	}
}

func TestSubscribe_StartingPoint(t *testing.T) {
	st := openStore(t, "")
	l := newLog(t, st, stream.Options{})
	appendPosts(t, st, l, 5)

	tests := []struct {
		name      string
		opts      stream.SubscribeOptions
		wantStart uint64
		wantErr   error
	}{
		{"zero cursor is the whole log", stream.SubscribeOptions{}, 0, nil},
		{"cursor in the middle", stream.SubscribeOptions{Cursor: 2}, 2, nil},
		{"cursor at newest", stream.SubscribeOptions{Cursor: 5}, 5, nil},
		{"live ignores cursor", stream.SubscribeOptions{Live: true, Cursor: 1}, 5, nil},
		{"future cursor", stream.SubscribeOptions{Cursor: 6}, 0, stream.ErrFutureCursor},
		{"bad collection pattern", stream.SubscribeOptions{Collections: []string{"app.bsky.*.post"}}, 0, stream.ErrInvalidOptions},
		{"empty collection pattern", stream.SubscribeOptions{Collections: []string{""}}, 0, stream.ErrInvalidOptions},
		{"bad DID", stream.SubscribeOptions{DIDs: []string{"alice"}}, 0, stream.ErrInvalidOptions},
		{"bad kind", stream.SubscribeOptions{Kinds: []store.EventKind{9}}, 0, stream.ErrInvalidOptions},
		{"bad origin", stream.SubscribeOptions{Origin: 7}, 0, stream.ErrInvalidOptions},
		{"bad name", stream.SubscribeOptions{Name: "a/b"}, 0, stream.ErrInvalidOptions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := l.Subscribe(context.Background(), tt.opts)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			if sub.Start() != tt.wantStart {
				t.Fatalf("Start = %d, want %d", sub.Start(), tt.wantStart)
			}
			if tt.wantStart < 5 {
				if got := collect(t, sub, 5); !slices.Equal(got, seq(tt.wantStart+1, 5)) {
					t.Fatalf("got %v, want %d..5", got, tt.wantStart+1)
				}
			}
		})
	}
}

func TestSubscribe_EmptyLog(t *testing.T) {
	st := openStore(t, "")
	l := newLog(t, st, stream.Options{})
	sub, err := l.Subscribe(context.Background(), stream.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	appendPosts(t, st, l, 2)
	if got := collect(t, sub, 2); !slices.Equal(got, seq(1, 2)) {
		t.Fatalf("got %v, want [1 2]", got)
	}
}

func TestSubscribe_EndsWithContextAndLogClose(t *testing.T) {
	st := openStore(t, "")
	l := stream.New(st, stream.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := l.Subscribe(ctx, stream.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-sub.Done()
	if !errors.Is(sub.Err(), context.Canceled) {
		t.Fatalf("Err = %v, want context.Canceled", sub.Err())
	}

	sub2, err := l.Subscribe(context.Background(), stream.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	select {
	case <-sub2.Done():
	default:
		t.Fatal("Log.Close returned before the subscription ended")
	}
	if !errors.Is(sub2.Err(), stream.ErrClosed) {
		t.Fatalf("Err = %v, want ErrClosed", sub2.Err())
	}
	if _, err := l.Subscribe(context.Background(), stream.SubscribeOptions{}); !errors.Is(err, stream.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}
}

// TestSubscribe_ConcurrentWritesRandomCursors subscribes at random cursors
// while a writer appends, and checks that every subscription sees exactly
// the ids after its cursor, in order, through the end of the writes.
func TestSubscribe_ConcurrentWritesRandomCursors(t *testing.T) {
	const total = 3000
	st := openStore(t, "")
	l := newLog(t, st, stream.Options{PageSize: 16, Buffer: 4})
	appendPosts(t, st, l, 50)

	var written sync.WaitGroup
	written.Add(1)
	newest := make(chan uint64, 1)
	newest <- 50
	go func() {
		defer written.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		n := uint64(50)
		for n < total {
			k := min(1+rng.IntN(20), total-int(n))
			n = appendPosts(t, st, l, k)
			<-newest
			newest <- n
		}
	}()

	rng := rand.New(rand.NewPCG(3, 4))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 40 {
		cur := <-newest
		newest <- cur
		cursor := rng.Uint64N(cur + 1)
		opts := stream.SubscribeOptions{Cursor: cursor}
		if i%8 == 7 {
			opts = stream.SubscribeOptions{Live: true}
		}
		sub, err := l.Subscribe(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer sub.Close()
			want := sub.Start() + 1
			for ev := range sub.Events() {
				if ev.ID != want {
					errs <- fmt.Errorf("subscription %d (start %d): got id %d, want %d", i, sub.Start(), ev.ID, want)
					return
				}
				want++
				if ev.ID == total {
					return
				}
			}
			errs <- errors.New("subscription ended early")
		}()
		time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
	}
	written.Wait()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("subscribers did not finish")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestSubscribe_Filters(t *testing.T) {
	st := openStore(t, "")
	l := newLog(t, st, stream.Options{PageSize: 4, Buffer: 2})
	alice, bob := "did:plc:alice", "did:web:bob.test"
	evs := []*store.Event{
		recordEvent(1, alice, "app.bsky.feed.post", false),
		recordEvent(2, bob, "app.bsky.feed.like", false),
		recordEvent(3, alice, "app.bsky.graph.follow", true),
		{Kind: store.KindIdentity, DID: bob, Handle: "bob.test", Time: t0, Live: true},
		recordEvent(4, bob, "xyz.statusphere.status", true),
		{Kind: store.KindAccount, DID: alice, Active: false, Status: "deactivated", Time: t0, Live: true},
		recordEvent(5, alice, "app.bsky.graph.block", false),
		{Kind: store.KindRecord, DID: bob, Collection: "app.bsky.feed.post", RKey: "x", Action: store.ActionDelete, Time: t0, Live: true},
	}
	newest := appendEvents(t, st, l, evs...)

	tests := []struct {
		name string
		opts stream.SubscribeOptions
		want []uint64
	}{
		{"none", stream.SubscribeOptions{}, seq(1, 8)},
		{"exact collection", stream.SubscribeOptions{Collections: []string{"app.bsky.feed.post"}}, []uint64{1, 4, 6, 8}},
		{"wildcard collection", stream.SubscribeOptions{Collections: []string{"app.bsky.graph.*"}}, []uint64{3, 4, 6, 7}},
		{"two patterns", stream.SubscribeOptions{Collections: []string{"app.bsky.feed.*", "xyz.statusphere.status"}}, []uint64{1, 2, 4, 5, 6, 8}},
		{"did", stream.SubscribeOptions{DIDs: []string{bob}}, []uint64{2, 4, 5, 8}},
		{"kind record", stream.SubscribeOptions{Kinds: []store.EventKind{store.KindRecord}}, []uint64{1, 2, 3, 5, 7, 8}},
		{"kinds identity and account", stream.SubscribeOptions{Kinds: []store.EventKind{store.KindIdentity, store.KindAccount}}, []uint64{4, 6}},
		{"live only", stream.SubscribeOptions{Origin: stream.LiveOnly}, []uint64{3, 4, 5, 6, 8}},
		{"backfill only", stream.SubscribeOptions{Origin: stream.BackfillOnly}, []uint64{1, 2, 7}},
		{"combined", stream.SubscribeOptions{DIDs: []string{alice}, Kinds: []store.EventKind{store.KindRecord},
			Collections: []string{"app.bsky.graph.*"}, Origin: stream.BackfillOnly}, []uint64{7}},
		{"matches nothing", stream.SubscribeOptions{DIDs: []string{"did:plc:carol"}}, nil},
	}
	for _, tt := range tests {
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

	// Filtered-out events advance the position, so a later live event
	// arrives with nothing in between.
	sub, err := l.Subscribe(context.Background(), stream.SubscribeOptions{DIDs: []string{"did:plc:carol"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	drain(t, sub, newest)
	id := appendEvents(t, st, l, recordEvent(9, "did:plc:carol", "app.bsky.feed.post", true))
	if got := collect(t, sub, id); !slices.Equal(got, []uint64{id}) {
		t.Fatalf("live after filtered: got %v, want [%d]", got, id)
	}
}

func TestParseKindAndOrigin(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want store.EventKind
	}{{"record", store.KindRecord}, {"identity", store.KindIdentity}, {"account", store.KindAccount}, {"repo", store.KindRepo}} {
		if got, err := stream.ParseKind(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseKind(%q) = %v, %v", tt.in, got, err)
		}
	}
	if _, err := stream.ParseKind("commit"); !errors.Is(err, stream.ErrInvalidOptions) {
		t.Errorf("ParseKind(commit) err = %v", err)
	}
	for _, tt := range []struct {
		in   string
		want stream.Origin
	}{{"", stream.AnyOrigin}, {"any", stream.AnyOrigin}, {"live", stream.LiveOnly}, {"backfill", stream.BackfillOnly}} {
		if got, err := stream.ParseOrigin(tt.in); err != nil || got != tt.want {
			t.Errorf("ParseOrigin(%q) = %v, %v", tt.in, got, err)
		}
	}
	if _, err := stream.ParseOrigin("historical"); !errors.Is(err, stream.ErrInvalidOptions) {
		t.Errorf("ParseOrigin(historical) err = %v", err)
	}
}
