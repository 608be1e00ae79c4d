package stream_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

func counts(t *testing.T, st store.Store) store.Counts {
	t.Helper()
	var c store.Counts
	err := st.View(context.Background(), func(tx store.ReadTx) error {
		var err error
		c, err = tx.Counts()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func bounds(t *testing.T, st store.Store) (oldest, newest uint64) {
	t.Helper()
	err := st.View(context.Background(), func(tx store.ReadTx) error {
		var err error
		oldest, newest, err = tx.EventBounds()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return oldest, newest
}

func TestRetention_ByCountReclaimsValues(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, "")
	l := newLog(t, st, stream.Options{MaxEvents: 30, PruneBatch: 7})
	appendPosts(t, st, l, 100)
	before := counts(t, st)
	if before.Blocks != 100 || before.Events != 100 {
		t.Fatalf("before: %d blocks, %d events; want 100, 100", before.Blocks, before.Events)
	}

	n, err := l.Prune(ctx)
	if err != nil || n != 70 {
		t.Fatalf("Prune = %d, %v; want 70", n, err)
	}
	after := counts(t, st)
	if after.Blocks != 30 || after.Events != 30 {
		t.Fatalf("after: %d blocks, %d events; want 30, 30", after.Blocks, after.Events)
	}
	if oldest, newest := bounds(t, st); oldest != 71 || newest != 100 {
		t.Fatalf("bounds = %d..%d, want 71..100", oldest, newest)
	}
	if n, err := l.Prune(ctx); err != nil || n != 0 {
		t.Fatalf("second Prune = %d, %v; want 0", n, err)
	}

	tests := []struct {
		name       string
		cursor     uint64
		fromOldest bool
		wantErr    error
		wantNotice bool
		wantFirst  uint64
	}{
		{"outdated cursor", 10, false, stream.ErrOutdatedCursor, false, 0},
		{"just outdated", 69, false, stream.ErrOutdatedCursor, false, 0},
		{"cursor right before oldest", 70, false, nil, false, 71},
		{"zero cursor is the retained log", 0, false, nil, false, 71},
		{"outdated from oldest", 10, true, nil, true, 71},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := l.Subscribe(ctx, stream.SubscribeOptions{Cursor: tt.cursor, FromOldest: tt.fromOldest})
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
			select {
			case n := <-sub.Notices():
				if !tt.wantNotice {
					t.Fatalf("unexpected notice %+v", n)
				}
				if n.Name != "OutdatedCursor" || n.Cursor != tt.cursor || n.Oldest != 71 {
					t.Fatalf("notice = %+v", n)
				}
			default:
				if tt.wantNotice {
					t.Fatal("no notice")
				}
			}
			if got := collect(t, sub, 100); !slices.Equal(got, seq(tt.wantFirst, 100)) {
				t.Fatalf("got %v, want %d..100", got, tt.wantFirst)
			}
		})
	}
}

func TestRetention_ByAge(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, "")
	now := t0.Add(100 * time.Second)
	l := newLog(t, st, stream.Options{MaxAge: 30 * time.Second, PruneBatch: 4, Now: func() time.Time { return now }})
	var evs []*store.Event
	for i := 1; i <= 100; i++ {
		evs = append(evs, recordEvent(i, "did:plc:alice", "app.bsky.feed.post", true)) // Time t0+i s
	}
	appendEvents(t, st, l, evs...)

	// Cutoff t0+70s: events 1..69 are older.
	if n, err := l.Prune(ctx); err != nil || n != 69 {
		t.Fatalf("Prune = %d, %v; want 69", n, err)
	}
	if oldest, _ := bounds(t, st); oldest != 70 {
		t.Fatalf("oldest = %d, want 70", oldest)
	}
	if c := counts(t, st); c.Blocks != 31 {
		t.Fatalf("blocks = %d, want 31", c.Blocks)
	}
	now = now.Add(time.Hour)
	if n, err := l.Prune(ctx); err != nil || n != 31 {
		t.Fatalf("Prune everything = %d, %v; want 31", n, err)
	}
	// Everything pruned: cursor 0 starts at the newest, an old cursor is
	// outdated.
	if _, err := l.Subscribe(ctx, stream.SubscribeOptions{Cursor: 99}); !errors.Is(err, stream.ErrOutdatedCursor) {
		t.Fatalf("cursor 99 of an empty log: %v, want ErrOutdatedCursor", err)
	}
	sub, err := l.Subscribe(ctx, stream.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if sub.Start() != 100 {
		t.Fatalf("Start = %d, want 100", sub.Start())
	}
}

// A subscription that does not read while retention prunes past it ends
// with ErrOutdatedCursor, or, with FromOldest, reports a notice and skips
// to the oldest retained event.
func TestRetention_PrunesPastSlowSubscription(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, "")
	l := newLog(t, st, stream.Options{PageSize: 2, Buffer: 1, MaxEvents: 10})
	appendPosts(t, st, l, 5)

	strict, err := l.Subscribe(ctx, stream.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lenient, err := l.Subscribe(ctx, stream.SubscribeOptions{FromOldest: true})
	if err != nil {
		t.Fatal(err)
	}
	// Each holds at most PageSize+Buffer events; read one so they are
	// surely positioned early.
	<-strict.Events()
	<-lenient.Events()
	appendPosts(t, st, l, 45)
	if _, err := l.Prune(ctx); err != nil {
		t.Fatal(err)
	}

	got := collect(t, strict, 50)
	<-strict.Done()
	if !errors.Is(strict.Err(), stream.ErrOutdatedCursor) {
		t.Fatalf("strict: Err = %v after %v, want ErrOutdatedCursor", strict.Err(), got)
	}
	if len(got) == 0 || got[len(got)-1] >= 41 {
		t.Fatalf("strict got %v, want only events before the pruned range", got)
	}

	var lgot []uint64
	var notice *stream.Notice
	for ev := range lenient.Events() {
		select {
		case n := <-lenient.Notices():
			notice = &n
			lgot = append(lgot, 0) // marks where the notice came
		default:
		}
		lgot = append(lgot, ev.ID)
		if ev.ID == 50 {
			break
		}
	}
	if notice == nil || notice.Oldest != 41 {
		t.Fatalf("lenient: notice %+v, want one with Oldest 41 (got %v)", notice, lgot)
	}
	// The notice comes no later than event 41; events up to its Cursor,
	// already buffered, may come after it.
	i := slices.Index(lgot, 0)
	ids := slices.DeleteFunc(slices.Clone(lgot), func(id uint64) bool { return id == 0 })
	j := slices.Index(ids, 41)
	if i < 0 || i > slices.Index(lgot, 41) || j < 1 || !slices.Equal(ids[j:], seq(41, 50)) ||
		!slices.IsSorted(ids[:j]) || ids[j-1] > notice.Cursor {
		t.Fatalf("lenient got %v with notice %+v; want early events, the notice by event 41, then 41..50", lgot, notice)
	}
	lenient.Close()
}

func TestRun_PrunesInBackground(t *testing.T) {
	st := openStore(t, "")
	l := newLog(t, st, stream.Options{MaxEvents: 5, PruneInterval: 5 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	appendPosts(t, st, l, 20)
	deadline := time.Now().Add(10 * time.Second)
	for counts(t, st).Events != 5 {
		if time.Now().After(deadline) {
			t.Fatalf("events = %d, want 5", counts(t, st).Events)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
