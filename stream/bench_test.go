package stream_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// BenchmarkReplay measures replay throughput from the store to 1 and to 100
// concurrent subscribers, in events delivered per second (all subscribers
// together).
func BenchmarkReplay(b *testing.B) {
	const events = 20_000
	st := openStore(b, "")
	l := newLog(b, st, stream.Options{})
	evs := make([]*store.Event, 1000)
	for n := 0; n < events; n += len(evs) {
		for i := range evs {
			evs[i] = recordEvent(n+i, "did:plc:alice", "app.bsky.feed.post", true)
		}
		appendEvents(b, st, l, evs...)
	}
	for _, subs := range []int{1, 100} {
		b.Run(fmt.Sprintf("subscribers=%d", subs), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var wg sync.WaitGroup
				for range subs {
					sub, err := l.Subscribe(context.Background(), stream.SubscribeOptions{})
					if err != nil {
						b.Fatal(err)
					}
					wg.Go(func() {
						defer sub.Close()
						for ev := range sub.Events() {
							if ev.ID == events {
								return
							}
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(b.N)*events*float64(subs)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
