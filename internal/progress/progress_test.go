package progress

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestWork_RateAndETA(t *testing.T) {
	for _, tc := range []struct {
		name     string
		total    int64
		steps    []int64 // units added, one step every 10 s
		rate     float64
		eta      float64
		contains string
	}{
		{"steady", 1000, []int64{100, 100, 100, 100, 100, 100, 100}, 10, 30, "700 of 1000 items (70%), 10 items/s, ETA 30s"},
		{"unknown total", 0, []int64{50, 50, 50, 50}, 5, -1, "200 items, 5.0 items/s, ETA unknown"},
		{"stalled", 1000, []int64{100, 100, 100, 0, 0, 0, 0}, 0, -1, "300 of 1000 items (30%), 0 items/s, ETA unknown"},
		// The rate is over the last 30 to 60 s: (4040-30)/50 s, not 4040/80 s.
		{"speeding up: the recent pace counts", 10000, []int64{10, 10, 10, 10, 1000, 1000, 1000, 1000}, 80.2, 75, "80 items/s, ETA 1m15s"},
		{"done", 100, []int64{50, 50, 0, 0}, 2.5, 0, "100 of 100 items (100%), 2.5 items/s, ETA 0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			b := &Board{Now: c.now}
			w := b.Start("test", "items", tc.total)
			for _, n := range tc.steps {
				c.advance(10 * time.Second)
				w.Add(n)
			}
			s := b.Snapshot()[0]
			if s.PerSecond != tc.rate || s.ETASeconds != tc.eta {
				t.Fatalf("rate %v eta %v, want %v and %v (%+v)", s.PerSecond, s.ETASeconds, tc.rate, tc.eta, s)
			}
			if !strings.Contains(s.String(), tc.contains) {
				t.Fatalf("line %q does not contain %q", s.String(), tc.contains)
			}
		})
	}
}

func TestBoard_FinishedWorkStaysAnHour(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	b := &Board{Now: c.now}
	w := b.Start("crawl", "repos", 0)
	c.advance(100 * time.Second)
	w.Add(500)
	w.Finish(errors.New("relay said no"))
	w.Add(1) // counted, but the work stays finished
	s := b.Snapshot()
	if len(s) != 1 || s[0].Finished.IsZero() || s[0].Error != "relay said no" || s[0].ETASeconds != 0 {
		t.Fatalf("snapshot %+v, want the finished crawl with its error", s)
	}
	if !strings.Contains(s[0].String(), "stopped: relay said no") {
		t.Fatalf("line %q", s[0].String())
	}
	// Starting the same name again finishes nothing running, and keeps the
	// old one while it is recent.
	b.Start("crawl", "repos", 0)
	if n := len(b.Snapshot()); n != 2 {
		t.Fatalf("%d items, want 2", n)
	}
	c.advance(2 * time.Hour)
	if s := b.Snapshot(); len(s) != 1 || !s[0].Finished.IsZero() {
		t.Fatalf("after two hours: %+v, want only the running crawl", s)
	}
}

func TestBoard_StartingAgainFinishesTheRunningOne(t *testing.T) {
	b := &Board{}
	first := b.Start("rebuild", "records", 10)
	b.Start("rebuild", "records", 20)
	if s := first.Snapshot(time.Now()); s.Finished.IsZero() {
		t.Fatal("the first rebuild still runs")
	}
	for range maxItems + 5 {
		b.Start("x", "things", 1)
	}
	if n := len(b.Snapshot()); n > maxItems {
		t.Fatalf("%d items kept, want at most %d", n, maxItems)
	}
}

func TestBoard_LogsRunningWork(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	b := &Board{}
	w := b.Start("crawl of the full network", "repos", 0)
	w.Add(42)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Log(ctx, log, 10*time.Millisecond) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), "crawl of the full network: 42 repos") {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line in %q", buf.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if !strings.Contains(buf.String(), "eta_seconds=-1") {
		t.Fatalf("line lacks its attributes: %q", buf.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
