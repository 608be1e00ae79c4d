package backfill

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	min, max := time.Minute, time.Hour
	for _, tc := range []struct {
		retries int
		jitter  float64
		want    time.Duration
	}{
		{0, 0, time.Minute},
		{1, 0, time.Minute},
		{2, 0, 2 * time.Minute},
		{3, 0, 4 * time.Minute},
		{6, 0, 32 * time.Minute},
		{7, 0, time.Hour},
		{1000, 0, time.Hour},
		{1, 1, 72 * time.Second},
		{1, -1, 48 * time.Second},
		{1000, -1, 48 * time.Minute},
	} {
		if got := backoff(min, max, tc.retries, tc.jitter); got != tc.want {
			t.Errorf("backoff(retries=%d, jitter=%v) = %v, want %v", tc.retries, tc.jitter, got, tc.want)
		}
	}
	for range 1000 {
		j := randJitter()
		if j < -1 || j >= 1 {
			t.Fatalf("jitter %v out of [-1, 1)", j)
		}
	}
}

func TestRetryAt(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &Scheduler{opts: Options{Now: func() time.Time { return now }}.withDefaults()}
	for _, tc := range []struct {
		name   string
		header http.Header
		want   time.Time
	}{
		{"retry-after seconds", http.Header{"Retry-After": {"30"}}, now.Add(30 * time.Second)},
		{"retry-after date", http.Header{"Retry-After": {now.Add(2 * time.Minute).Format(http.TimeFormat)}}, now.Add(2 * time.Minute)},
		{"ratelimit-reset unix", http.Header{"Ratelimit-Reset": {"1767323105"}}, time.Unix(1767323105, 0)},
		{"ratelimit-reset delta", http.Header{"Ratelimit-Reset": {"45"}}, now.Add(45 * time.Second)},
		{"retry-after wins", http.Header{"Retry-After": {"10"}, "Ratelimit-Reset": {"45"}}, now.Add(10 * time.Second)},
		{"none: min backoff", http.Header{}, now.Add(time.Minute)},
		{"garbage: min backoff", http.Header{"Retry-After": {"soon"}}, now.Add(time.Minute)},
		{"capped at max backoff", http.Header{"Retry-After": {"86400"}}, now.Add(time.Hour)},
		{"past date: now", http.Header{"Retry-After": {now.Add(-time.Hour).Format(http.TimeFormat)}}, now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.retryAt(tc.header); !got.Equal(tc.want) {
				t.Errorf("retryAt = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBudget_LargeRequestWaitsAndIsNotOvertaken(t *testing.T) {
	b := newBudget(100)
	ctx := context.Background()
	if err := b.acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	got := make(chan int64, 2)
	go func() { // 80 does not fit beside 60: waits
		if err := b.acquire(ctx, 80); err == nil {
			got <- 80
		}
	}()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.waiters.Len() == 1 })
	go func() { // 30 would fit, but must not overtake 80
		if err := b.acquire(ctx, 30); err == nil {
			got <- 30
		}
	}()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.waiters.Len() == 2 })
	select {
	case n := <-got:
		t.Fatalf("acquire(%d) succeeded while the budget was held", n)
	case <-time.After(20 * time.Millisecond):
	}
	b.release(60)
	if n := <-got; n != 80 {
		t.Fatalf("first granted %d, want 80", n)
	}
	select {
	case n := <-got:
		t.Fatalf("acquire(%d) granted beside 80 of 100", n)
	case <-time.After(20 * time.Millisecond):
	}
	b.release(80)
	if n := <-got; n != 30 {
		t.Fatalf("granted %d, want 30", n)
	}
	b.release(30)
	if used, peak := b.inUse(); used != 0 || peak != 80 {
		t.Fatalf("used %d peak %d, want 0 and 80", used, peak)
	}
}

func TestBudget_CancelledWaiterTakesNothing(t *testing.T) {
	b := newBudget(100)
	if err := b.acquire(context.Background(), 100); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- b.acquire(ctx, 50) }()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.waiters.Len() == 1 })
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("cancelled acquire succeeded")
	}
	b.release(100)
	if used, _ := b.inUse(); used != 0 {
		t.Fatalf("used %d after release, want 0", used)
	}
	if got := b.clamp(500); got != 100 {
		t.Fatalf("clamp(500) = %d, want 100", got)
	}
}

func TestBudget_NeverOverCommitted(t *testing.T) {
	b := newBudget(1000)
	var wg sync.WaitGroup
	var over atomic.Bool
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(100 + 97*i%900)
			if err := b.acquire(context.Background(), n); err != nil {
				t.Error(err)
				return
			}
			if used, _ := b.inUse(); used > 1000 {
				over.Store(true)
			}
			time.Sleep(time.Millisecond)
			b.release(n)
		}()
	}
	wg.Wait()
	if over.Load() {
		t.Fatal("budget over-committed")
	}
	if used, peak := b.inUse(); used != 0 || peak > 1000 {
		t.Fatalf("used %d peak %d", used, peak)
	}
}

func TestHosts_PerHostLimitAndPause(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	hs := newHosts(2, 0, clock)
	ctx := context.Background()

	r1, err := hs.acquire(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := hs.acquire(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// A third request to "a" waits; "b" is unaffected.
	third := make(chan func(), 1)
	go func() {
		r, err := hs.acquire(ctx, "a")
		if err != nil {
			t.Error(err)
			return
		}
		third <- r
	}()
	rb, err := hs.acquire(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	rb()
	select {
	case <-third:
		t.Fatal("third request to a host with PerHost 2 did not wait")
	case <-time.After(20 * time.Millisecond):
	}
	r1()
	r3 := <-third
	r2()
	r3()

	// A pause stops "a" only, until its time.
	hs.pause("a", now.Add(time.Minute))
	if _, err := hs.acquire(ctx, "a"); err == nil {
		t.Fatal("acquire on a paused host succeeded")
	} else if fl, ok := err.(*failure); !ok || fl.kind != KindRateLimited || !fl.until.Equal(now.Add(time.Minute)) {
		t.Fatalf("err = %v, want a rate-limit failure until +1m", err)
	}
	if got := hs.limited(); got != 1 {
		t.Fatalf("limited() = %d, want 1", got)
	}
	rb, err = hs.acquire(ctx, "b")
	if err != nil {
		t.Fatalf("host b affected by a's pause: %v", err)
	}
	rb()
	mu.Lock()
	now = now.Add(time.Minute + time.Second)
	mu.Unlock()
	r, err := hs.acquire(ctx, "a")
	if err != nil {
		t.Fatalf("host a still paused after its time: %v", err)
	}
	r()
	if got := hs.limited(); got != 0 {
		t.Fatalf("limited() = %d, want 0", got)
	}
}

func TestHosts_Interval(t *testing.T) {
	hs := newHosts(4, 30*time.Millisecond, time.Now)
	start := time.Now()
	for range 4 {
		r, err := hs.acquire(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		r()
	}
	// Four starts spaced by 30ms span at least 90ms.
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Fatalf("4 paced requests took %v, want >= 90ms", el)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}
