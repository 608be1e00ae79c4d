package jetstream_test

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cistern-dev/cistern/jetstream"
	"github.com/cistern-dev/cistern/store"
	"github.com/cistern-dev/cistern/stream"
)

// cpuTime returns the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFanout100 fans live events out to 100 filtered /subscribe
// connections: half want one of four collections, half ten of 100 repos.
// Each iteration writes 1,000 events (records of about 200 bytes of JSON)
// and waits until every connection has received what its filter passes.
// It reports log events per second, messages delivered per second, and
// the process's CPU time per event and per delivered message (the 100
// clients, which only read frames, run in the same process).
func BenchmarkFanout100(b *testing.B) {
	for _, compress := range []bool{false, true} {
		b.Run(fmt.Sprintf("compress=%v", compress), func(b *testing.B) { benchFanout(b, compress) })
	}
}

func benchFanout(b *testing.B, compress bool) {
	const subscribers, batch, repos = 100, 1000, 100
	colls := []string{"app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow", "xyz.statusphere.status"}
	f := newFixture(b, jetstream.Options{}, stream.Options{})
	type sub struct {
		keep func(ev *store.Event) bool
		got  atomic.Int64
	}
	subs := make([]*sub, subscribers)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i := range subs {
		q := url.Values{}
		if compress {
			q.Set("compress", "true")
		}
		s := &sub{}
		if i%2 == 0 {
			c := colls[i/2%len(colls)]
			q.Set("wantedCollections", c)
			s.keep = func(ev *store.Event) bool { return ev.Collection == c }
		} else {
			want := map[string]bool{}
			for j := 0; j < 10; j++ {
				d := did(fmt.Sprintf("r%03d", (i*7+j*10)%repos))
				want[d] = true
				q.Add("wantedDids", d)
			}
			s.keep = func(ev *store.Event) bool { return want[ev.DID] }
		}
		subs[i] = s
		c := dial(b, f.wsURL("/subscribe", q), nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, _, err := c.conn.Read(ctx); err != nil {
					return
				}
				s.got.Add(1)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // every connection subscribed

	var expected int64
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for n := 0; n < b.N; n++ {
		evs := make([]*store.Event, batch)
		for i := range evs {
			evs[i] = f.create(fmt.Sprintf("r%03d", (n*batch+i)%repos), colls[(n*batch+i)/repos%len(colls)])
			for _, s := range subs {
				if s.keep(evs[i]) {
					expected++
				}
			}
		}
		for i := 0; i < batch; i += 100 {
			f.write(b, evs[i:i+100]...)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			var total int64
			for _, s := range subs {
				total += s.got.Load()
			}
			if total >= expected {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("delivered %d of %d messages after a minute", total, expected)
			}
			time.Sleep(time.Millisecond)
		}
	}
	wall := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	logEvents := float64(b.N * batch)
	b.ReportMetric(logEvents/wall.Seconds(), "events/s")
	b.ReportMetric(float64(expected)/wall.Seconds(), "deliveries/s")
	b.ReportMetric(float64(cpu.Microseconds())/logEvents, "cpu-µs/event")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(expected), "cpu-ns/delivery")
	b.ReportMetric(float64(expected)/logEvents, "deliveries/event")
}
