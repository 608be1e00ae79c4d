package stream_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestMemory_ThousandSubscribers writes 50,000 events while 1,000
// subscriptions are open, 990 of which never read, and checks that the heap
// is bounded per subscriber (PageSize+Buffer events at most) and does not
// grow with the number of events written.
func TestMemory_ThousandSubscribers(t *testing.T) {
	if testing.Short() {
		t.Skip("long test")
	}
	const (
		subscribers = 1000
		readers     = 10
		total       = 50_000
		batch       = 500
	)
	ctx := context.Background()
	st := openStore(t, "")
	l := newLog(t, st, stream.Options{})

	base := heapInUse()
	subs := make([]*stream.Subscription, subscribers)
	for i := range subs {
		sub, err := l.Subscribe(ctx, stream.SubscribeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = sub
	}
	var wg sync.WaitGroup
	for _, sub := range subs[:readers] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ev := range sub.Events() {
				if ev.ID == total {
					return
				}
			}
		}()
	}

	var mid uint64
	evs := make([]*store.Event, batch)
	for n := 0; n < total; n += batch {
		for i := range evs {
			evs[i] = recordEvent(n+i, "did:plc:alice", "app.bsky.feed.post", true)
		}
		appendEvents(t, st, l, evs...)
		if n+batch == total/5 {
			// Let every stalled subscriber take its first page (a loaded
			// machine schedules them late), so that what is measured next
			// is growth with events, not subscribers still filling up.
			sum := func() (n uint64) {
				for _, sub := range subs[readers:] {
					n += sub.Position()
				}
				return n
			}
			// Settled when the positions have not moved for half a second
			// (a loaded machine may leave a goroutine unscheduled for a
			// few tens of milliseconds).
			for last, still, deadline := sum(), 0, time.Now().Add(30*time.Second); still < 10 && time.Now().Before(deadline); {
				time.Sleep(50 * time.Millisecond)
				if now := sum(); now != last {
					last, still = now, 0
				} else {
					still++
				}
			}
			mid = heapInUse()
		}
	}
	wg.Wait()
	end := heapInUse()

	perSub := float64(int64(end)-int64(base)) / subscribers
	t.Logf("heap: %d KiB before subscribing, %d KiB after %d events, %d KiB after %d events; %.1f KiB per subscriber (%d of %d never read)",
		base>>10, mid>>10, total/5, end>>10, total, perSub/1024, subscribers-readers, subscribers)
	// A stalled subscriber holds at most PageSize (256) + Buffer (64) events
	// of about 400 bytes here, plus its goroutine: ~130 KiB. Measured: see
	// the log line above.
	if perSub > 256<<10 {
		t.Errorf("%.1f KiB per subscriber, want < 256 KiB", perSub/1024)
	}
	// Writing four times more events did not grow the heap by more than
	// a small margin: nothing is buffered per event.
	if end > mid+mid/4+(8<<20) {
		t.Errorf("heap grew from %d KiB to %d KiB while writing; want flat", mid>>10, end>>10)
	}
	runtime.KeepAlive(subs)
	for _, sub := range subs {
		sub.Close()
	}
}
